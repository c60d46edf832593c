"""TIES done the way whole-tensor tools do it, for the bench (bench/many-extras.ts): real PyTorch
(Debian's python3-torch), every model's whole state dict loaded into RAM first (as
safetensors.torch.load_file or torch.load do), then mergekit's TIES per tensor in fp32
(test/hf/mergekit_reference.py: magnitude_prune with torch.topk, sign election by the weighted
sum, disjoint mean), the whole output state dict collected in RAM and written at the end.

  python3 bench/ties_torch_way.py OUT DENSITY LAMBDA BASE MODEL...

Weights are 1 for every model (the bench's ties-sd15h scenario). Floating tensors present with
the same shape in every model are merged and stored as fp16; the others are copied from the base.
Prints one JSON line: seconds to load, merge and write, and the peak resident set (ru_maxrss).
The safetensors files are parsed by hand (torch 1.13 has no safetensors module).
"""
import json
import os
import resource
import struct
import sys
import time

import torch


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "hf"))
from mergekit_reference import ties  # noqa: E402

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
FLOATS = {"F32", "F16", "BF16", "F64"}


def load_state_dict(path):
    """The whole file in RAM, every tensor a view of it (what load_file gives: all tensors resident)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for key, e in header.items():
        if key == "__metadata__":
            continue
        b, end = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        count = (end - b) // torch.tensor([], dtype=dtype).element_size()
        t = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + n + b) if count > 0 else torch.empty(0, dtype=dtype)
        tensors[key] = (t.reshape(e["shape"]), e["dtype"])
    return tensors


def save_state_dict(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    blobs = []
    for key, t in tensors.items():
        t = t.contiguous()
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() > 0 else b""
        header[key] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    out, density, lam = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    paths = sys.argv[4:]
    t0 = time.time()
    base, *models = [load_state_dict(p) for p in paths]
    t1 = time.time()
    merged = {}
    with torch.no_grad():
        for key, (b, dtype) in base.items():
            others = [m.get(key) for m in models]
            if dtype in FLOATS and all(o is not None and o[0].shape == b.shape for o in others):
                b32 = b.to(torch.float32)
                r = ties(b32, [o[0].to(torch.float32) for o in others], [1.0] * len(others), [density] * len(others), True)
                if lam != 1:
                    r = b32 + (r - b32) * lam
                merged[key] = r.to(torch.float16)
            else:
                merged[key] = b.clone()
    t2 = time.time()
    save_state_dict(out, merged)
    t3 = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"secondsLoad": t1 - t0, "secondsMerge": t2 - t1, "secondsWrite": t3 - t2, "seconds": t3 - t0, "peakRss": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
