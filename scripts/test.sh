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
# Builds and tests the plugin once more through meson-compat/meson.build,
# which also compiles a C program against the installable meta header.
if command -v meson >/dev/null; then
  meson_build=$(mktemp -d)
  meson setup "$meson_build" meson-compat
  meson compile -C "$meson_build"
  meson test -C "$meson_build" --print-errorlogs
  rm -rf "$meson_build"
fi
echo "[test] all tests passed in $(( $(date +%s) - start )) s"
