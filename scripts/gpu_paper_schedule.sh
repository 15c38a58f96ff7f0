#!/usr/bin/env bash
# Runs FUN-AD with the published training schedule on a CUDA machine and
# writes the reports beside the CPU ones, so docs/benchmarks.md can compare
# them. Meant for the GPU machine that is sometimes lent to this project.
#
#   scripts/gpu_paper_schedule.sh DATA OUT
#
# Environment:
#   EPOCHS   epochs of the published schedule (default 1500, as published)
#   RATIO    anomaly-to-normal ratio (default 0.1)
#   SEED     split and model seed (default 0)
#   FUNAD    funad binary built with CUDA (default target/release/funad)
#   CACHE    feature cache folder (default OUT/cache)
#
# The binary must be a CUDA build: run `FUNAD_CUDA=1 scripts/setup.sh`
# (full CUDA torch wheel) and `cargo build --release --locked -p funad`
# on a machine with the same torch. The script refuses to fall back to the
# CPU: `--device cuda` is an error where CUDA is missing.
#
# Two runs, both with the published optimiser (RMSProp, lr 2e-5, momentum 0.2),
# random adaptor start, min-max bank selection rebuilt every iteration with
# no cap, and test metrics after every epoch (for the oracle comparison only):
#   1. the default features (DINOv2 ViT-S/14, block 8);
#   2. CLS ⊕ final-block patch token, the features of FUN-AD (Im et al., 2025).
# NOTE: the paper's DINO ViT-B/8 is not reachable here; pass its converted
# weights with FUNAD_BACKBONE to run the paper's backbone as well.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 DATA OUT" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
data=$1
out=$2
epochs=${EPOCHS:-1500}
ratio=${RATIO:-0.1}
seed=${SEED:-0}
funad=${FUNAD:-$root/target/release/funad}
cache=${CACHE:-$out/cache}
if [ ! -x "$funad" ]; then
    echo "error: $funad not found; build it with: cargo build --release --locked -p funad" >&2
    exit 1
fi
if [ ! -d "$data/train/good" ]; then
    echo "error: $data has no train/good folder; pass an MVTec-layout dataset" >&2
    exit 2
fi
mkdir -p "$out"
paper=(--epochs "$epochs" --optimizer rmsprop --lr 2e-5 --momentum 0.2
    --adaptor-init random --bank-normalisation minmax --bank-every 1 --bank-max-features 0)
run() {
    local name=$1
    shift
    local json="$out/${name}_r${ratio}_s${seed}.json"
    echo "[gpu] $name: $epochs epochs, ratio $ratio, seed $seed"
    local start
    start=$(date +%s)
    "$funad" eval --data "$data" --ratio "$ratio" --seed "$seed" --methods knn,funad \
        --device cuda --every-epoch --compare-heads --cache "$cache" --json "$json" \
        "${paper[@]}" "$@" | tee "${json%.json}.txt"
    echo "[gpu] $name done in $(( $(date +%s) - start )) s"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
run paper_schedule_block8
run paper_schedule_paper_features --paper-features
