#!/usr/bin/env bash
# Scores every frame of a video file with funadscore and writes one funadjson
# line per frame to OUT/results.jsonl. It also writes OUT/overlay.avi, Motion
# JPEG in AVI: the video with the heat map, the outline of the regions above
# the threshold and the OK/NG mark drawn in.
#
# Usage: pipelines/video.sh MODEL VIDEO OUT
#   MODEL  model file written by `funad train`
#   VIDEO  any video file that decodebin can decode with the installed plugins
#   OUT    output folder, created when missing
#
# Needs: what pipelines/env.sh needs, gstreamer1.0-plugins-base (decodebin,
# videoconvert) and gstreamer1.0-plugins-good (jpegenc, avimux), plus the
# decoder plugin of the input format. The first video stream is scored, and
# other streams (audio, say) stay unlinked, which the demuxer ignores.
#
# Each line has the PTS and duration of its frame in `pts_ns` and
# `duration_ns`, so a line can be matched to its frame in overlay.avi.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 MODEL VIDEO OUT" >&2
    exit 2
fi
model=$1
video=$2
out=$3

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
funad_require_model "$model"
if [[ ! -f $video ]]; then
    echo "error: video file '$video' not found" >&2
    exit 1
fi
mkdir -p "$out"

echo "Scoring $video" >&2
start=$SECONDS
# RGB before funadscore, so the heat map is drawn in colour on grey input too.
gst-launch-1.0 -q \
    filesrc "location=$video" ! decodebin name=decode \
    decode. ! videoconvert ! video/x-raw,format=RGB ! \
    funadscore "model=$model" overlay=both post-messages=false ! tee name=scored \
    scored. ! queue ! funadjson "source-id=$(basename "$video")" ! \
    filesink "location=$out/results.jsonl" \
    scored. ! queue ! videoconvert ! jpegenc ! avimux ! \
    filesink "location=$out/overlay.avi"

lines=$(wc -l <"$out/results.jsonl")
ok=$(grep -c '"verdict":"OK"' "$out/results.jsonl" || true)
ng=$(grep -c '"verdict":"NG"' "$out/results.jsonl" || true)
echo "Scored $lines frames in $((SECONDS - start)) s: $ok OK, $ng NG"
echo "Wrote $out/results.jsonl and $out/overlay.avi"
