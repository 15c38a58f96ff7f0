#!/usr/bin/env bash
# Measures the scoring speed of the discriminator and the bank score heads
# on the same frames, alternating them, so the ratio holds on a shared machine.
#
#   scripts/bench_heads.sh TRAIN_DIR FRAMES_DIR [ROUNDS]
#
# Trains one model per head on the images of TRAIN_DIR (1 epoch: speed does
# not depend on training), then runs `funad bench` on FRAMES_DIR with each
# model in turn, ROUNDS times (default 2). TRAIN_DIR needs at least 174
# images of 256 patches for the bank to reach its default 40,000 features.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 TRAIN_DIR FRAMES_DIR [ROUNDS]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
train=$1
frames=$2
rounds=${3:-2}
funad=${FUNAD:-$root/target/release/funad}
if [ ! -x "$funad" ]; then
    echo "error: $funad not found; build it with: cargo build --release --locked -p funad" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for head in discriminator bank; do
    "$funad" train --epochs 1 --score-head "$head" -o "$work/$head.funad" "$train" >/dev/null
    echo "[bench] $head model: $(du -h "$work/$head.funad" | cut -f1)"
done
for ((r = 1; r <= rounds; r++)); do
    for head in discriminator bank; do
        rate=$("$funad" bench -m "$work/$head.funad" "$frames" \
            | sed -n 's/.*"frames_per_second":\([0-9.]*\).*/\1/p')
        echo "[bench] round $r, $head head: $rate frames/s"
    done
done
