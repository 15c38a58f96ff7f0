#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine:
#   1. install what is missing (scripts/setup.sh) and build funad and the plugin;
#   2. fetch a real defect dataset from PyPI (elpv-dataset, solar-cell
#      electroluminescence images, CC BY-NC-SA 4.0) into data/, outside git;
#   3. train a model on an unlabeled mix of normal and defective cells;
#   4. play held-out cells through a gst-launch-1.0 pipeline with funadscore,
#      writing annotated frames and the results as JSON lines;
#   5. print the image AUROC from the labels held aside.
#
# Usage: scripts/demo.sh                 the ELPV demo
#        scripts/demo.sh --images DIR    train on your own folder of images and
#                                        score the same folder (no AUROC: no labels)
# Output goes to runs/demo/ (override with FUNAD_DEMO_OUT).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${FUNAD_DEMO_OUT:-$root/runs/demo}
epochs=${FUNAD_DEMO_EPOCHS:-5}
own_images=
if [ "${1:-}" = "--images" ]; then
    own_images=$(cd "${2:?--images needs a folder}" && pwd)
elif [ $# -gt 0 ]; then
    echo "usage: $0 [--images DIR]" >&2
    exit 2
fi

t_all=$(date +%s)
t=$t_all
lap() {
    local now
    now=$(date +%s)
    printf '[demo] %-34s %4d s\n' "$1" $((now - t))
    t=$now
}

bash scripts/setup.sh
lap "set-up"

export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q -p funad -p gst-plugin-funad
mkdir -p target/gst-plugins
cp target/release/libgstfunad.so target/gst-plugins/
export GST_PLUGIN_PATH=$root/target/gst-plugins
export GST_REGISTRY=$out/registry.bin
lap "build"

rm -rf "$out"
mkdir -p "$out/frames"
if [ -z "$own_images" ]; then
    data=$root/data/elpv
    if [ ! -f "$data/test_labels.csv" ]; then
        wheel_dir=$(mktemp -d)
        .venv/bin/python -m pip download -q --no-deps -d "$wheel_dir" elpv-dataset==1.0.0.post1
        .venv/bin/python scripts/elpv_prepare.py "$wheel_dir"/elpv_dataset-*.whl "$data"
        rm -rf "$wheel_dir"
    fi
    train_dir=$data/train
    test_dir=$data/test
    lap "dataset (elpv-dataset from PyPI)"
else
    train_dir=$own_images
    test_dir=$own_images
fi

target/release/funad train "$train_dir" -o "$out/model.funad" --epochs "$epochs"
lap "training ($epochs epochs)"

if [ -z "$own_images" ]; then
    # All ELPV cells are 300x300 PNGs, so one multifilesrc stream carries them.
    count=$(ls "$test_dir" | wc -l)
    gst-launch-1.0 -q multifilesrc location="$test_dir/%04d.png" index=0 stop-index=$((count - 1)) \
            caps="image/png,framerate=(fraction)25/1" \
        ! pngdec ! videoconvert ! funadscore model="$out/model.funad" overlay=both \
        ! tee name=t \
        t. ! queue ! funadjson ! filesink location="$out/results.jsonl" \
        t. ! queue ! videoconvert ! pngenc ! multifilesink location="$out/frames/%04d.png"
else
    bash pipelines/images.sh "$out/model.funad" "$test_dir" "$out/frames"
    mv "$out/frames/results.jsonl" "$out/results.jsonl"
fi
lap "gst-launch-1.0 with funadscore"

echo "[demo] $(wc -l <"$out/results.jsonl") result lines in $out/results.jsonl, annotated frames in $out/frames/"
if [ -z "$own_images" ]; then
    .venv/bin/python scripts/results_auroc.py "$out/results.jsonl" "$data/test_labels.csv"
fi
t=$t_all
lap "total"
