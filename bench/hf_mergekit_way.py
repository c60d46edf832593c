"""The same merge done mergekit's way, for bench/hf-memory.ts: PyTorch (Debian's python3-torch),
tensor by tensor, each output shard collected in RAM (a dict of tensors) and written when full,
as mergekit's TensorWriter does. Formulas from test/hf/mergekit_reference.py.

  python3 bench/hf_mergekit_way.py METHOD BASE OTHER OUT SHARD_BYTES
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "hf"))
from mergekit_reference import slerp, ties  # noqa: E402

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
NAMES = {v: k for k, v in DTYPES.items()}


def headers(folder):
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    table = {}
    for name in files:
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, e in header.items():
            if key != "__metadata__":
                table[key] = (path, 8 + n, e)
    return table


def load(entry):
    path, start, e = entry
    b, end = e["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + b)
        raw = bytearray(f.read(end - b))
    return torch.frombuffer(raw, dtype=DTYPES[e["dtype"]]).reshape(e["shape"])


def write_shard(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for key, t in tensors.items():
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 else t.contiguous().view(torch.int16).numpy().tobytes()
        header[key] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    method, base_dir, other_dir, out, shard_bytes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    os.makedirs(out, exist_ok=True)
    base, other = headers(base_dir), headers(other_dir)
    shard, size, count = {}, 0, 0
    layers = 1 + max(int(k.split(".")[2]) for k in base if k.startswith("model.layers."))
    for key in sorted(base, key=lambda k: (0 if "embed" in k else 2 if not k.startswith("model.layers.") else 1, int(k.split(".")[2]) if k.startswith("model.layers.") else 0, k)):
        a, b = load(base[key]).to(torch.float32), load(other[key]).to(torch.float32)
        if method == "slerp":
            layer = int(key.split(".")[2]) if key.startswith("model.layers.") else (0 if "embed" in key else layers - 1)
            r = slerp(layer / max(1, layers - 1), a, b)
        else:
            r = ties(a, [b], [1.0], [0.5], True)
        r = r.to(torch.bfloat16)
        nbytes = r.numel() * 2
        if shard and size + nbytes > shard_bytes:
            count += 1
            write_shard(os.path.join(out, f"shard-{count}.safetensors"), shard)
            shard, size = {}, 0
        shard[key] = r
        size += nbytes
    if shard:
        write_shard(os.path.join(out, f"shard-{count + 1}.safetensors"), shard)


if __name__ == "__main__":
    main()
