"""Writes a safetensors file's tensors as PyTorch's `torch.save` would (the zip format of
torch >= 1.6: `archive/data.pkl` holding an OrderedDict of `_rebuild_tensor_v2` calls on
storages in `archive/data/N`), without PyTorch, so tests can make `.bin` weights, and
with `--ckpt` as a training checkpoint in the original Stable Diffusion layout would hold
them: `{"state_dict": ..., "optimizer_states": [...], "global_step": ..., "epoch": ...}`.

Usage: python3 torch_save.py IN.safetensors OUT.bin
       python3 torch_save.py --ckpt IN.safetensors OUT.ckpt
"""
import collections
import json
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins that pickle under torch's own names (pickle records module and name only).
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
STORAGES = {}
for dtype, name in [("F32", "FloatStorage"), ("F16", "HalfStorage"), ("BF16", "BFloat16Storage"),
                    ("I64", "LongStorage"), ("U8", "ByteStorage")]:
    cls = type(name, (), {"__module__": "torch"})
    setattr(torch, name, cls)
    STORAGES[dtype] = cls


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}


class Storage:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s)
            s *= d
        args = (self.storage, 0, tuple(self.shape), tuple(stride), False,
                collections.OrderedDict())
        return _rebuild_tensor_v2, args


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", STORAGES[obj.dtype], obj.key, "cpu", obj.numel)
        return None


def main(src, dst, ckpt=False):
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    state, blobs = collections.OrderedDict(), []
    for i, name in enumerate(sorted(k for k in header if k != "__metadata__")):
        info = header[name]
        a, b = info["data_offsets"]
        storage = Storage(str(i), info["dtype"], (b - a) // SIZES[info["dtype"]])
        state[name] = Tensor(storage, info["shape"])
        blobs.append((storage.key, data[a:b]))
    if ckpt:
        # Training extras, with a tensor of their own that readers must never load.
        extra = Storage(str(len(blobs)), "F32", 4)
        blobs.append((extra.key, struct.pack("<4f", 1, 2, 3, 4)))
        state = {"epoch": 0, "global_step": 10, "state_dict": state,
                 "optimizer_states": [{"state": {0: {"exp_avg": Tensor(extra, [4])}}}]}
    out = __import__("io").BytesIO()
    Pickler(out, protocol=2).dump(state)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", out.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, blob in blobs:
            z.writestr(f"archive/data/{key}", blob)
        z.writestr("archive/version", "3\n")


if __name__ == "__main__":
    if sys.argv[1] == "--ckpt":
        main(sys.argv[2], sys.argv[3], ckpt=True)
    else:
        main(sys.argv[1], sys.argv[2])
