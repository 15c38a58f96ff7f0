#!/usr/bin/env bash
# Runs `funad eval` over a grid of contamination ratios and seeds and writes
# one JSON report per run, so that scripts/plot_accuracy.py can aggregate them.
# Runs whose JSON already exists are skipped, so an interrupted sweep resumes.
#
#   scripts/accuracy_sweep.sh DATA OUT [extra funad eval options...]
#
# Environment:
#   RATIOS   anomaly-to-normal ratios (default "0 0.01 0.025 0.05 0.1 0.2")
#   SEEDS    split and model seeds (default "0 1")
#   METHODS  comma-separated methods (default knn,patchcore,softpatch)
#   CACHE    feature cache folder (default runs/cache)
#   TAG      file-name prefix of the reports (default sweep)
#
# The features of every image of DATA are extracted once into CACHE, and each
# split then only selects rows, so a baseline run takes minutes, not the
# backbone's time. FUN-AD takes about 65 s an epoch on 2 CPU cores; pass
# METHODS=funad and --epochs to size it.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 DATA OUT [extra funad eval options...]" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
data=$1
out=$2
shift 2
ratios=${RATIOS:-0 0.01 0.025 0.05 0.1 0.2}
seeds=${SEEDS:-0 1}
methods=${METHODS:-knn,patchcore,softpatch}
cache=${CACHE:-$root/runs/cache}
tag=${TAG:-sweep}
funad=${FUNAD:-$root/target/release/funad}
if [ ! -x "$funad" ]; then
    echo "error: $funad not found; build it with: cargo build --release --locked -p funad" >&2
    exit 1
fi
mkdir -p "$out"
for ratio in $ratios; do
    for seed in $seeds; do
        json="$out/${tag}_r${ratio}_s${seed}.json"
        if [ -f "$json" ]; then
            echo "[sweep] $json exists, skipped"
            continue
        fi
        echo "[sweep] ratio $ratio, seed $seed, methods $methods"
        start=$(date +%s)
        "$funad" eval --data "$data" --ratio "$ratio" --seed "$seed" --methods "$methods" \
            --cache "$cache" --json "$json" "$@" | tee "${json%.json}.txt"
        echo "[sweep] ratio $ratio, seed $seed done in $(( $(date +%s) - start )) s"
    done
done
