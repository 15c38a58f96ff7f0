#!/usr/bin/env bash
# Scores a live source and shows that a slow model drops frames instead of
# stalling the camera: a `queue leaky=downstream max-size-buffers=1` in front
# of funadscore holds only the newest frame and drops the older one whenever
# the scorer is still busy. At the end the script prints how many frames the
# source produced, how many were scored and how many the queue dropped.
#
# Usage: pipelines/live.sh MODEL [SECONDS]
#   MODEL    model file written by `funad train`
#   SECONDS  how long to run (default: 10)
#
# Environment:
#   DEVICE  a V4L2 device such as /dev/video0: capture from it with v4l2src
#           instead of videotestsrc is-live=true (320×240, 30 frames/s)
#   SINK    pipeline tail after funadscore (default: `fakesink sync=false`).
#           `videoconvert ! autovideosink sync=false` shows the overlay on a display.
#
# NOTE: only the default videotestsrc and fakesink were run; the DEVICE and
# SINK paths are untested, because the test machine has no camera or display.
#
# Needs: what pipelines/env.sh needs, gstreamer1.0-plugins-base (videotestsrc,
# videoconvert) and, with DEVICE, gstreamer1.0-plugins-good (v4l2src).
#
# How: identity silent=false reports every frame that leaves the source, and
# funadscore posts one funad-result message per scored frame. gst-launch-1.0
# prints both (-v and -m), and dropped = produced - scored. As a cross-check,
# the queue's own count comes from its "leaking item" debug lines
# (GST_DEBUG=queue_dataflow:5). The run ends with SIGINT after SECONDS, and -e
# turns that into an EOS that drains the queue. The two counts agree in most
# runs but can differ by one frame that is in flight when the run stops.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 MODEL [SECONDS]" >&2
    exit 2
fi
model=$1
seconds=${2:-10}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SECONDS must be a positive whole number, not '$seconds'" >&2
    exit 2
fi

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
funad_require_model "$model"

if [[ -n ${DEVICE:-} ]]; then
    source_description="v4l2src device=$DEVICE"
else
    source_description="videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1"
fi
sink_description=${SINK:-fakesink sync=false}

log=$FUNAD_TMP/gst-launch.log
debug_log=$FUNAD_TMP/gst-debug.log
echo "Running for $seconds s: $source_description" >&2
status=0
# shellcheck disable=SC2086
GST_DEBUG="${GST_DEBUG:+$GST_DEBUG,}queue_dataflow:5" GST_DEBUG_FILE=$debug_log \
    GST_DEBUG_NO_COLOR=1 timeout --signal=INT "$seconds" gst-launch-1.0 -e -v -m \
    $source_description ! identity name=camera silent=false ! \
    queue name=latest leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 ! \
    videoconvert ! funadscore "model=$model" overlay=both ! $sink_description \
    >"$log" 2>&1 || status=$?
# timeout exits with 124 when it sent the signal. The EOS check below tells
# whether gst-launch-1.0 then stopped cleanly.
if [[ $status -ne 0 && $status -ne 124 ]]; then
    tail -n 20 "$log" >&2
    echo "error: gst-launch-1.0 failed with status $status" >&2
    exit 1
fi
if ! grep -q "Got EOS from element" "$log"; then
    tail -n 20 "$log" >&2
    echo "error: the pipeline did not reach EOS" >&2
    exit 1
fi

# identity also reports events, and -m repeats each report as a message, so
# only its "last-message = chain" lines count frames.
produced=$(grep -c "^/GstPipeline:pipeline0/GstIdentity:camera: last-message = chain" "$log" || true)
scored=$(grep -c "funad-result," "$log" || true)
dropped=$((produced - scored))
leaked=$(grep -c "<latest>.*leaking item" "$debug_log" || true)
echo "Frames from the source:       $produced"
echo "Frames scored by funadscore:  $scored"
echo "Frames dropped by the queue:  $dropped (the queue logged $leaked drops)"
# The PTS of consecutive scored frames shows the gaps that the drops leave,
# and their span gives the scoring rate without the model loading time.
grep -o "pts=(guint64)[0-9]*" "$log" | cut -d')' -f2 | awk '
    NR == 1 { first = $1 }
    NR > 1 && $1 - last > gap { gap = $1 - last }
    { last = $1 }
    END {
        if (NR > 1) {
            printf "Scoring rate:                 %.1f frames/s\n", (NR - 1) / ((last - first) / 1e9)
            printf "Largest PTS gap between scored frames: %.3f s\n", gap / 1e9
        }
    }'
echo "Last scored frames:"
grep -o "funad-result, score=(float)[^,]*, verdict=(string)[^,]*" "$log" | tail -n 3 | sed 's/^/  /'
