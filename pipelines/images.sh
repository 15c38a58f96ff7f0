#!/usr/bin/env bash
# Scores a folder of still images with funadscore and writes, for each image,
# an annotated PNG (heat map, outline of the regions above the threshold and
# the OK/NG mark) plus one funadjson line per image in OUT/results.jsonl.
#
# Usage: pipelines/images.sh MODEL DIR OUT
#   MODEL  model file written by `funad train`
#   DIR    folder of JPEG and PNG images (.jpg, .jpeg, .png, any case), of any sizes
#   OUT    output folder, created when missing; must not be DIR
#
# Writes OUT/<name>.png for each input <name>.<ext>, OUT/results.jsonl, and
# OUT/images.tsv, which maps the `sequence` of each line to its input file.
#
# Needs: what pipelines/env.sh needs, and gstreamer1.0-plugins-good (jpegdec,
# pngdec, pngenc, multifilesrc, multifilesink).
#
# How: one multifilesrc stream can carry images of different sizes, because
# jpegdec and pngdec renegotiate caps for every frame. A stream carries one
# format, though, so the script links each run of same-format files (in name
# order) into a scratch folder as 00000.<ext>, 00001.<ext>, ... and joins the
# runs with concat. The model then loads once and `sequence` counts over all
# images. Still images carry no timestamps: the decoders give the first image
# of each run PTS 0 and the others none, so `pts_ns` does not identify an
# image, but `sequence` and OUT/images.tsv do.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 MODEL DIR OUT" >&2
    exit 2
fi
model=$1
dir=$2
out=$3

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
funad_require_model "$model"
if [[ ! -d $dir ]]; then
    echo "error: image folder '$dir' not found" >&2
    exit 1
fi
mkdir -p "$out"
if [[ $(realpath "$out") == $(realpath "$dir") ]]; then
    echo "error: OUT must differ from DIR, or the annotated PNGs would replace the inputs" >&2
    exit 1
fi

# Lists the images in name order. Two inputs with the same name stem would
# give outputs of the same name, so that is an error.
mapfile -t files < <(find -L "$dir" -maxdepth 1 -type f \
    \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | LC_ALL=C sort)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "error: no .jpg, .jpeg or .png files in '$dir'" >&2
    exit 1
fi
declare -A stems=()
for file in "${files[@]}"; do
    name=$(basename "$file")
    stem=${name%.*}
    if [[ -n ${stems[$stem]:-} ]]; then
        echo "error: $name and ${stems[$stem]} would both be written as $stem.png; rename one" >&2
        exit 1
    fi
    stems[$stem]=$name
done

# Splits the list into runs of one format, one numbered folder per run.
sources=()
run=-1
previous=
index=0
: >"$out/images.tsv"
for sequence in "${!files[@]}"; do
    file=${files[$sequence]}
    case ${file,,} in
        *.png) format=png extension=png ;;
        *) format=jpeg extension=jpg ;;
    esac
    if [[ $format != "$previous" ]]; then
        run=$((run + 1))
        index=0
        previous=$format
        mkdir "$FUNAD_TMP/run$run"
        if [[ $format == png ]]; then
            sources+=(multifilesrc "location=$FUNAD_TMP/run$run/%05d.png" caps=image/png ! pngdec ! join.)
        else
            sources+=(multifilesrc "location=$FUNAD_TMP/run$run/%05d.jpg" caps=image/jpeg ! jpegdec ! join.)
        fi
    fi
    ln -s "$(realpath "$file")" "$FUNAD_TMP/run$run/$(printf %05d "$index").$extension"
    index=$((index + 1))
    printf '%s\t%s\n' "$sequence" "$file" >>"$out/images.tsv"
done

mkdir "$FUNAD_TMP/annotated"
echo "Scoring ${#files[@]} images from $dir in $((run + 1)) stream(s)" >&2
# gst-launch-1.0 escapes the spaces inside each argument, so a path with
# spaces stays one property value.
gst-launch-1.0 -q \
    concat name=join ! videoconvert ! video/x-raw,format=RGB ! \
    funadscore "model=$model" overlay=both post-messages=false ! tee name=scored \
    scored. ! queue ! videoconvert ! pngenc ! \
    multifilesink "location=$FUNAD_TMP/annotated/%05d.png" \
    scored. ! queue ! funadjson "source-id=$(basename "$dir")" ! \
    filesink "location=$out/results.jsonl" \
    "${sources[@]}"

# Renames the numbered PNGs after their inputs.
for sequence in "${!files[@]}"; do
    name=$(basename "${files[$sequence]}")
    mv "$FUNAD_TMP/annotated/$(printf %05d "$sequence").png" "$out/${name%.*}.png"
done

lines=$(wc -l <"$out/results.jsonl")
ok=$(grep -c '"verdict":"OK"' "$out/results.jsonl" || true)
ng=$(grep -c '"verdict":"NG"' "$out/results.jsonl" || true)
echo "Scored $lines images: $ok OK, $ng NG"
echo "Wrote $out/results.jsonl, $out/images.tsv and ${#files[@]} annotated PNGs in $out"
