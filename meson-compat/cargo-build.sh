#!/bin/sh
# Builds the plugin with cargo and copies libgstfunad.so to OUTPUT.
# Usage: cargo-build.sh CARGO REPO_ROOT TARGET_DIR OUTPUT
# TARGET_DIR and OUTPUT may be relative to the current directory.
#
# cargo reads .cargo/config.toml (which sets LIBTORCH) from the current
# directory, not from --manifest-path, so the build runs in REPO_ROOT.
set -eu
cargo=$1
root=$2
# Make both paths absolute before the cd below.
mkdir -p "$3"
target_dir=$(cd "$3" && pwd)
output=$(cd "$(dirname "$4")" && pwd)/$(basename "$4")

cd "$root"
"$cargo" build --release --locked -p gst-plugin-funad \
  --manifest-path "$root/Cargo.toml" --target-dir "$target_dir"
cp "$target_dir/release/libgstfunad.so" "$output"
