"""Run EfficientNet-Lite0 in ONNX Runtime, as a reference for the tch implementation.

The graph is built here from the converted weights with ONNX's standard
operators: Conv with explicit TensorFlow "SAME" pads, BatchNormalization,
Clip to [0, 6] and Add. The reference shares the weights and the
architecture table with funad, but none of its tensor code.

Usage: efficientnet_reference.py WEIGHTS.safetensors INPUT.npy OUT_PREFIX BLOCK [BLOCK ...]
       efficientnet_reference.py --classify WEIGHTS.safetensors IMAGE

INPUT.npy is an ImageNet-normalised float32 batch [B, 3, H, W]. For each
1-based BLOCK the script writes OUT_PREFIX<BLOCK>.npy with that block's
output as [B, H / stride, W / stride, C], the layout of funad's patch grids.
With --classify it runs the whole network with its ImageNet head on one
photo and prints the five most likely class indices with their
probabilities, which shows that the architecture, the padding and the input
scaling fit the weights.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

# (repeats, stride of the first block, expansion ratio, output width)
STAGES = [(1, 1, 1, 16), (2, 2, 6, 24), (2, 2, 6, 40), (3, 2, 6, 80), (3, 1, 6, 112), (4, 2, 6, 192), (1, 1, 6, 320)]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def same_pads(size, kernel, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes = []
        self.inits = {}
        self.count = 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def init(self, key):
        if key not in self.inits:
            self.inits[key] = numpy_helper.from_array(self.w[key].astype(np.float32), key)
        return key

    def conv_bn(self, x, size, conv, bn, stride, groups):
        weight = self.w[conv + ".weight"]
        k = weight.shape[2]
        top, bottom, out_h = same_pads(size[0], k, stride)
        left, right, out_w = same_pads(size[1], k, stride)
        y = self.name("conv")
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.init(conv + ".weight")],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[top, left, bottom, right],
                group=groups,
            )
        )
        z = self.name("bn")
        inputs = [y] + [self.init(f"{bn}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
        self.nodes.append(helper.make_node("BatchNormalization", inputs, [z], epsilon=1e-3))
        return z, (out_h, out_w)

    def relu6(self, x):
        y = self.name("relu6")
        lo, hi = self.name("lo"), self.name("hi")
        self.inits[lo] = numpy_helper.from_array(np.array(0.0, dtype=np.float32), lo)
        self.inits[hi] = numpy_helper.from_array(np.array(6.0, dtype=np.float32), hi)
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
        return y


def build(w, shape, blocks, classify=False):
    """Returns an ONNX model with the outputs of `blocks`, and the logits when `classify`."""
    g = Graph(w)
    cur, size = g.conv_bn("input", shape[2:], "_conv_stem", "_bn0", 2, 1)
    cur = g.relu6(cur)
    outputs = {}
    width_in = 32
    index = 0
    for repeats, first_stride, ratio, width_out in STAGES:
        for r in range(repeats):
            p = f"_blocks.{index}"
            stride = first_stride if r == 0 else 1
            block_in = cur
            y = cur
            if ratio != 1:
                y, _ = g.conv_bn(y, size, p + "._expand_conv", p + "._bn0", 1, 1)
                y = g.relu6(y)
            hidden = width_in * ratio
            y, new_size = g.conv_bn(y, size, p + "._depthwise_conv", p + "._bn1", stride, hidden)
            y = g.relu6(y)
            y, _ = g.conv_bn(y, new_size, p + "._project_conv", p + "._bn2", 1, 1)
            if stride == 1 and width_in == width_out:
                z = g.name("add")
                g.nodes.append(helper.make_node("Add", [y, block_in], [z]))
                y = z
            cur, size, width_in = y, new_size, width_out
            index += 1
            outputs[index] = cur
    out_names = [outputs[b] for b in blocks]
    if classify:
        # The head: 1x1 convolution to 1280 channels, global average pool, the 1000-way layer.
        y, _ = g.conv_bn(cur, size, "_conv_head", "_bn1", 1, 1)
        y = g.relu6(y)
        pooled, flat, logits = g.name("pool"), g.name("flat"), "logits"
        g.nodes.append(helper.make_node("GlobalAveragePool", [y], [pooled]))
        g.nodes.append(helper.make_node("Flatten", [pooled], [flat]))
        g.nodes.append(helper.make_node("Gemm", [flat, g.init("_fc.weight"), g.init("_fc.bias")], [logits], transB=1))
        out_names.append(logits)
    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in out_names],
        list(g.inits.values()),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out_names


def tf_scaling(x):
    """Undoes the ImageNet normalisation and scales [0, 1] as (255 x - 127) / 128."""
    unit = x * IMAGENET_STD[None, :, None, None] + IMAGENET_MEAN[None, :, None, None]
    return ((unit * 255.0 - 127.0) / 128.0).astype(np.float32)


def main(weights_path, input_path, prefix, blocks):
    w = load_file(weights_path)
    x = np.load(input_path).astype(np.float32)
    model, out_names = build(w, x.shape, blocks)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(out_names, {"input": tf_scaling(x)})
    for b, r in zip(blocks, results):
        np.save(f"{prefix}{b}.npy", np.ascontiguousarray(r.transpose(0, 2, 3, 1)))


def classify(weights_path, image_path):
    """Prints the five most likely ImageNet classes of one photo, as a check
    that the architecture table, padding and input scaling fit the weights."""
    from PIL import Image

    w = load_file(weights_path)
    img = Image.open(image_path).convert("RGB").resize((224, 224), Image.BICUBIC)
    unit = np.asarray(img, dtype=np.float32)[None].transpose(0, 3, 1, 2) / 255.0
    x = (unit - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    model, out_names = build(w, x.shape, [], classify=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(out_names, {"input": tf_scaling(x)})
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    for c in np.argsort(-p)[:5]:
        print(f"{int(c)} {p[c]:.4f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--classify":
        classify(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5:
        main(sys.argv[1], sys.argv[2], sys.argv[3], [int(b) for b in sys.argv[4:]])
    else:
        sys.exit(__doc__)
