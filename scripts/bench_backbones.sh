#!/usr/bin/env bash
# Measures the scoring speed of the ViT and the EfficientNet-Lite0 backbones,
# each with the discriminator and the bank score head, on the same frames,
# taking the four models in turn each round so the ratios hold on a shared
# machine.
#
#   scripts/bench_backbones.sh TRAIN_DIR FRAMES_DIR [ROUNDS]
#
# Trains one model per backbone and head on the images of TRAIN_DIR (1 epoch:
# speed does not depend on training), with each backbone's default features,
# then runs `funad bench` on FRAMES_DIR with each model, ROUNDS times
# (default 2). Each line gives frames/s and the ratio to the ViT with the
# discriminator head in the same round.
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
declare -A weights=(
    [vit]="$root/weights/dinov2_vits14.safetensors"
    [cnn]="$root/weights/efficientnet_lite0.safetensors"
)
for b in vit cnn; do
    if [ ! -f "${weights[$b]}" ]; then
        echo "error: ${weights[$b]} not found; run scripts/setup.sh" >&2
        exit 1
    fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
models=()
for b in vit cnn; do
    for head in discriminator bank; do
        "$funad" train --epochs 1 --backbone "${weights[$b]}" --score-head "$head" \
            -o "$work/$b-$head.funad" "$train" >/dev/null
        echo "[bench] $b $head model: $(du -h "$work/$b-$head.funad" | cut -f1)"
        models+=("$b-$head")
    done
done
for ((r = 1; r <= rounds; r++)); do
    base=""
    for m in "${models[@]}"; do
        rate=$("$funad" bench -m "$work/$m.funad" "$frames" \
            | sed -n 's/.*"frames_per_second":\([0-9.]*\).*/\1/p')
        [ -n "$base" ] || base=$rate
        ratio=$(awk -v a="$rate" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
        echo "[bench] round $r, $m: $rate frames/s, $ratio of vit-discriminator"
    done
done
