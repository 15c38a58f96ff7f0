#!/usr/bin/env bash
# Shows the line retraining itself: a folder of images plays in a loop as a
# live stream, a tee feeds both funadscore and funadtrain, and the pipeline
# starts without any model. funadtrain stores the frames, trains on them in
# the background, and each accepted version takes over in funadscore while
# the stream keeps playing. At the end the script prints, for each model
# version, how many frames it scored, and the training results.
#
# Usage: pipelines/retrain.sh IMAGES_DIR OUT [SECONDS]
#   IMAGES_DIR  JPEG or PNG images, unlabeled, of one product
#   OUT         folder for the frame store, the model versions and the log
#               (OUT/line.safetensors is the model in service)
#   SECONDS     how long to run (default: 300)
#
# Environment:
#   EVERY   stored frames between two trainings (default: 100)
#   EPOCHS  epochs of each training (default: 5)
#
# Needs: what pipelines/env.sh needs, and the default backbone in weights/
# (scripts/setup.sh installs it).
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    echo "usage: $0 IMAGES_DIR OUT [SECONDS]" >&2
    exit 2
fi
images=$1
out=$2
seconds=${3:-300}
every=${EVERY:-100}
epochs=${EPOCHS:-5}
for value in "$seconds" "$every" "$epochs"; do
    if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
        echo "error: SECONDS, EVERY and EPOCHS must be positive whole numbers, not '$value'" >&2
        exit 2
    fi
done

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
backbone=$FUNAD_REPO/weights/dinov2_vits14.safetensors
if [[ ! -f $backbone ]]; then
    echo "error: backbone $backbone not found; run scripts/setup.sh" >&2
    exit 1
fi

# multifilesrc needs numbered names: link the images as 00000.jpg, ...
frames=$FUNAD_TMP/frames
mkdir -p "$frames" "$out"
count=0
while IFS= read -r -d '' file; do
    ext=${file##*.}
    ext=${ext,,}
    [[ $ext == jpeg ]] && ext=jpg
    ln -s "$(realpath "$file")" "$frames/$(printf '%05d' "$count").$ext"
    count=$((count + 1))
done < <(find -L "$images" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -print0 | sort -z)
if [[ $count -lt 10 ]]; then
    echo "error: $images contains $count JPEG or PNG images, but at least 10 are needed" >&2
    exit 1
fi
if ls "$frames"/*.png >/dev/null 2>&1 && ls "$frames"/*.jpg >/dev/null 2>&1; then
    echo "error: $images mixes JPEG and PNG images; this example plays one format" >&2
    exit 1
fi
ext=$(ls "$frames" | head -n 1 | sed 's/.*\.//')
decoder=$([[ $ext == png ]] && echo pngdec || echo jpegdec)
caps=$([[ $ext == png ]] && echo image/png || echo image/jpeg)

log=$out/gst-launch.log
echo "Running for $seconds s on $count images, training every $every stored frames" >&2
status=0
timeout --signal=INT "$seconds" gst-launch-1.0 -e -m \
    multifilesrc location="$frames/%05d.$ext" index=0 loop=true caps="$caps,framerate=10/1" ! \
    "$decoder" ! videoconvert ! videoscale ! video/x-raw,format=RGB,width=320,height=320 ! \
    identity sync=true ! tee name=t \
    t. ! queue leaky=downstream max-size-buffers=1 ! \
        funadscore "model=$out/line.safetensors" wait-for-model=true post-messages=true ! \
        fakesink sync=false \
    t. ! queue ! funadtrain "store-location=$out/store" "model=$out/line.safetensors" \
        "backbone=$backbone" "train-every-frames=$every" "min-frames=$every" \
        "epochs=$epochs" batch-size=16 \
    >"$log" 2>&1 || status=$?
if [[ $status -ne 0 && $status -ne 124 ]]; then
    tail -n 20 "$log" >&2
    echo "error: gst-launch-1.0 failed with status $status" >&2
    exit 1
fi

echo "Frames scored by each model version (0: no model yet):"
grep -o "funad-result, .*model-version=(guint64)[0-9]*" "$log" |
    sed 's/.*model-version=(guint64)//' | sort -n | uniq -c |
    awk '{ printf "  version %s: %s frames\n", $2, $1 }'
echo "Training results:"
grep -o "funad-train-result, .*" "$log" |
    sed -E 's/.*version=\(guint64\)([0-9]+), accepted=\(boolean\)([a-z]+).*reason=\(string\)"?([^";]*)"?.*/  version \1 accepted=\2: \3/' | sed 's/\\//g' || true
echo "Kept versions:"
ls "$out" | grep -E '^line\.v[0-9]+' | sed 's/^/  /' || true
