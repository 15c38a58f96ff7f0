#!/usr/bin/env bash
# Installs what is missing (scripts/setup.sh), then builds and runs every test
# of the workspace against the real backbone, libtorch, GStreamer and the MTD
# images in ../shared/data/mtd (override with FUNAD_MTD).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
# A plugin that failed to load once stays blacklisted in a registry cache, so
# every run gets a fresh one.
export GST_REGISTRY="${GST_REGISTRY:-$(mktemp -d)/registry.bin}"
export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)
cargo test --workspace --release --locked -- --test-threads=1
echo "[test] all tests passed in $(( $(date +%s) - start )) s"
