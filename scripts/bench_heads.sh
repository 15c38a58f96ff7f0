#!/usr/bin/env bash
# Measures the scoring speed of the discriminator head, the bank head, and
# the bank head searching in bfloat16, on the same frames, taking them in
# turn, so the ratios hold on a shared machine.
#
#   scripts/bench_heads.sh TRAIN_DIR FRAMES_DIR [ROUNDS]
#
# Trains one model per variant on the images of TRAIN_DIR (1 epoch: speed does
# not depend on training), then runs `funad bench` on FRAMES_DIR with each
# model in turn, ROUNDS times (default 2). Each line gives frames/s and the
# ratio to the discriminator head in the same round. TRAIN_DIR needs at least 174
# images of 256 patches for the bank to reach its default 40,000 features.
#
# Environment: VARIANTS picks the variants, space-separated (default
# "discriminator bank bank-bfloat16"). The discriminator comes first, because
# the ratios are to the first variant. bank-positional keeps every patch of
# the images ranked by distance and searches within 1 patch of each position.
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
declare -A options=(
    [discriminator]="--score-head discriminator"
    [bank]="--score-head bank"
    [bank-bfloat16]="--score-head bank --score-bank-precision bfloat16"
    [bank-positional]="--score-head bank --score-bank-features 1000000 --score-bank-radius 1 --score-bank-ranking distance"
)
read -r -a variants <<<"${VARIANTS:-discriminator bank bank-bfloat16}"
for v in "${variants[@]}"; do
    if [ -z "${options[$v]+set}" ]; then
        echo "error: unknown variant $v; use: ${!options[*]}" >&2
        exit 2
    fi
done
for v in "${variants[@]}"; do
    # shellcheck disable=SC2086 # the options are split into words on purpose
    "$funad" train --epochs 1 ${options[$v]} -o "$work/$v.funad" "$train" >/dev/null
    echo "[bench] $v model: $(du -h "$work/$v.funad" | cut -f1)"
done
for ((r = 1; r <= rounds; r++)); do
    base=""
    for v in "${variants[@]}"; do
        rate=$("$funad" bench -m "$work/$v.funad" "$frames" \
            | sed -n 's/.*"frames_per_second":\([0-9.]*\).*/\1/p')
        [ -n "$base" ] || base=$rate
        ratio=$(awk -v a="$rate" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
        echo "[bench] round $r, $v: $rate frames/s, $ratio of ${variants[0]}"
    done
done
