#!/bin/sh
# Runs a command with GST_REGISTRY in a new temporary directory, because a
# plugin that failed to load once stays blacklisted in a reused registry.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
GST_REGISTRY="$dir/registry.bin" "$@"
