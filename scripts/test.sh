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
# which also compiles a C program against the installable meta header. That
# program reads scored metas of real MTD frames with a small model trained
# here (5 epochs on 17 images, about 10 s on 2 cores).
if command -v meson >/dev/null; then
  meson_build=$(mktemp -d)
  mtd=${FUNAD_MTD:-$root/../shared/data/mtd}
  mapfile -t good < <(find "$mtd/train/good" -name '*.jpg' | LC_ALL=C sort)
  mapfile -t blowholes < <(find "$mtd/test/blowhole" -name '*.jpg' | LC_ALL=C sort)
  mapfile -t cracks < <(find "$mtd/test/crack" -name '*.jpg' | LC_ALL=C sort)
  mapfile -t test_good < <(find "$mtd/test/good" -name '*.jpg' | LC_ALL=C sort)
  if [ ${#good[@]} -lt 16 ] || [ ${#blowholes[@]} -lt 3 ] || [ ${#cracks[@]} -lt 2 ] \
      || [ ${#test_good[@]} -lt 2 ]; then
    echo "[test] error: MTD images missing in $mtd; set FUNAD_MTD to the dataset folder" >&2
    exit 1
  fi
  train=()
  for ((i = 0; i < 16; i++)); do train+=("${good[i * ${#good[@]} / 16]}"); done
  train+=("${blowholes[-1]}")
  cargo build --release --locked -p funad
  target/release/funad train -o "$meson_build/model.safetensors" --epochs 5 --batch-size 8 \
    "${train[@]}"
  images=("${test_good[@]:0:2}" "${cracks[@]:0:2}" "${blowholes[@]:0:2}")
  meson setup "$meson_build/build" meson-compat -Dtest_model="$meson_build/model.safetensors" \
    "-Dtest_images=$(IFS=,; echo "${images[*]}")"
  meson compile -C "$meson_build/build"
  meson test -C "$meson_build/build" --print-errorlogs
  rm -rf "$meson_build"
fi
echo "[test] all tests passed in $(( $(date +%s) - start )) s"
