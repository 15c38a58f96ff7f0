# Shared set-up for the pipeline scripts, to be sourced rather than run.
#
# Builds the plugin in release (`cargo build --release -p gst-plugin-funad`
# from the repository root), copies target/release/libgstfunad.so into
# target/gst-plugins/ and points GStreamer at that copy with GST_PLUGIN_PATH
# and a fresh registry, so an older failed load of the plugin cannot hide it.
# The system plugins stay visible.
#
# Needs: cargo and the build set-up of scripts/setup.sh (libtorch), and the
# GStreamer tools (gst-launch-1.0, gst-inspect-1.0).
#
# Optional environment:
#   FUNAD_PLUGIN_LIB  an already built libgstfunad.so to use instead of building
#   FUNAD_PLUGIN_DIR  folder for the plugin copy (default: target/gst-plugins)
#
# Sets FUNAD_REPO (the repository root) and FUNAD_TMP (a scratch folder that
# an EXIT trap removes), and exports GST_PLUGIN_PATH and GST_REGISTRY.

FUNAD_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -z ${FUNAD_PLUGIN_LIB:-} ]]; then
    echo "Building the plugin (release)..." >&2
    (cd "$FUNAD_REPO" && cargo build --release -p gst-plugin-funad) >&2
    FUNAD_PLUGIN_LIB=$FUNAD_REPO/target/release/libgstfunad.so
fi
if [[ ! -f $FUNAD_PLUGIN_LIB ]]; then
    echo "error: plugin library $FUNAD_PLUGIN_LIB not found; unset FUNAD_PLUGIN_LIB to build it" >&2
    exit 1
fi

FUNAD_TMP=$(mktemp -d "${TMPDIR:-/tmp}/funad-pipeline.XXXXXX")
trap 'rm -rf "$FUNAD_TMP"' EXIT

plugin_dir=${FUNAD_PLUGIN_DIR:-$FUNAD_REPO/target/gst-plugins}
mkdir -p "$plugin_dir"
# Copy, then rename: a process that has the old copy loaded keeps a valid file.
cp "$FUNAD_PLUGIN_LIB" "$plugin_dir/.libgstfunad.so.new"
mv -f "$plugin_dir/.libgstfunad.so.new" "$plugin_dir/libgstfunad.so"

export GST_PLUGIN_PATH=$plugin_dir
export GST_REGISTRY=$FUNAD_TMP/registry.bin

if ! gst-inspect-1.0 funadscore >/dev/null 2>&1; then
    echo "error: GStreamer cannot load $plugin_dir/libgstfunad.so; run" \
        "GST_PLUGIN_PATH=$plugin_dir gst-inspect-1.0 $plugin_dir/libgstfunad.so to see why" >&2
    exit 1
fi

# Exits with a message unless $1 is a readable model file.
funad_require_model() {
    if [[ -z ${1:-} || ! -f $1 ]]; then
        echo "error: model file '${1:-}' not found; train one with" \
            "\`target/release/funad train IMAGE_DIR -o model.funad\`" >&2
        exit 1
    fi
}
