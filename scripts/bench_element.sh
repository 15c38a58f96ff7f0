#!/usr/bin/env bash
# Measures funadscore's own overhead: its frame rate inside a gst-launch-1.0
# pipeline against the library's raw scoring (`funad bench`) of the same
# decoded frames, in one run.
#
# Usage: scripts/bench_element.sh MODEL FRAMES_DIR
#   FRAMES_DIR contains same-size PNG frames named 0000.png, 0001.png, ...
#   (scripts/demo.sh leaves such frames in data/elpv/test).
#
# Per-frame element time = the pipeline's time per extra frame with funadscore
# minus the same pipeline without it; each is (T(N) − T(1)) / (N − 1), so plugin
# loading, model loading and decoding drop out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:?usage: $0 MODEL FRAMES_DIR}
frames=${2:?usage: $0 MODEL FRAMES_DIR}
cd "$root"
n=$(ls "$frames"/*.png | wc -l)
[ "$n" -ge 10 ] || { echo "error: $frames contains $n PNG frames, but at least 10 are needed" >&2; exit 1; }
mkdir -p target/gst-plugins
cp target/release/libgstfunad.so target/gst-plugins/
export GST_PLUGIN_PATH=$root/target/gst-plugins
export GST_REGISTRY=$(mktemp -d)/registry.bin

run() { # run COUNT ELEMENT...: wall seconds of one pipeline over COUNT frames
    local count=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    gst-launch-1.0 -q multifilesrc location="$frames/%04d.png" index=0 stop-index=$((count - 1)) \
        caps="image/png,framerate=(fraction)25/1" ! pngdec ! videoconvert ! "$@" ! fakesink sync=false
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)"
}

lib=$(target/release/funad bench -m "$model" "$frames")
with_n=$(run "$n" funadscore model="$model")
with_1=$(run 1 funadscore model="$model")
without_n=$(run "$n" identity)
without_1=$(run 1 identity)
python3 - "$lib" "$n" "$with_n" "$with_1" "$without_n" "$without_1" <<'PY'
import json, sys
lib = json.loads(sys.argv[1])
n, with_n, with_1, without_n, without_1 = int(sys.argv[2]), *map(float, sys.argv[3:])
element_s = (with_n - with_1) / (n - 1) - (without_n - without_1) / (n - 1)
element_fps = 1.0 / element_s
print(f"frames: {n}")
print(f"library (funad bench): {lib['frames_per_second']:.2f} frames/s on {lib['device']}, {lib['threads']} threads")
print(f"funadscore in gst-launch-1.0: {element_fps:.2f} frames/s (decode and conversion subtracted)")
print(f"ratio element / library: {element_fps / lib['frames_per_second']:.3f}")
PY
