"""Convert an official DINO or DINOv2 checkpoint (.pth) to safetensors for funad.

Usage: python3 convert_dino_pth.py dino_vitbase8_pretrain.pth dino_vitb8.safetensors

Needs a Python with torch and safetensors that can `import torch` (the
CPU-only venv that scripts/setup.sh makes cannot: it lacks cuDNN). The key
names of facebookresearch/dino and facebookresearch/dinov2 are kept as they
are; funad reads the architecture off the tensor shapes.
"""

import os
import sys

import torch
from safetensors.torch import save_file


def main(src: str, dst: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=True)
    # Some releases wrap the weights (for example {"teacher": {...}} in training checkpoints).
    for key in ("teacher", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight") if k not in state]
    if missing:
        sys.exit(f"error: {src} lacks {missing}; expected a DINO or DINOv2 ViT checkpoint")
    tensors = {k: v.detach().float().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    tmp = dst + ".part"
    save_file(tensors, tmp)
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
