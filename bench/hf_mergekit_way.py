"""The same merge done mergekit's way, for bench/hf-memory.ts and bench/hf-llm.ts: PyTorch
(Debian's python3-torch), tensor by tensor in fp32 (mergekit with `dtype: float32`), each output
shard collected in RAM (a dict of tensors) and written when full, then the index, as mergekit's
TensorWriter does (mergekit/io/tensor_writer.py; its default `out_shard_size` is 5e9 bytes).
Formulas from test/hf/mergekit_reference.py (slerp; ties with topk magnitude pruning, as
mergekit's sparsify.py). slerp's t is the config `t: [0, 0.5, 1]` over layers (the embedding
at t = 0, the final norm and lm_head at t = 1); ties is weight 1, density 0.5.

  python3 bench/hf_mergekit_way.py METHOD BASE OTHER OUT SHARD_BYTES

Progress on stderr, one line per tensor: "progress BYTES_READ TOTAL_BYTES SECONDS" (so a run
stopped at a time limit still tells its rate); at the end one JSON line on stdout with the CPU
seconds (getrusage) and the bytes written.
"""
import json
import os
import resource
import struct
import sys
import time

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


def nbytes_of(entry):
    b, end = entry[2]["data_offsets"]
    return end - b


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
    return 8 + len(text) + offset


def main():
    method, base_dir, other_dir, out, shard_bytes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    started = time.time()
    os.makedirs(out, exist_ok=True)
    base, other = headers(base_dir), headers(other_dir)
    total = sum(nbytes_of(e) for e in base.values()) + sum(nbytes_of(e) for e in other.values())
    shard, size, done, written = {}, 0, 0, 0
    names = []  # (temp name, keys) per shard, renamed to -of- names at the end as mergekit does
    layers = 1 + max(int(k.split(".")[2]) for k in base if k.startswith("model.layers."))

    def flush():
        nonlocal shard, size, written
        name = "model-%05d.safetensors" % (len(names) + 1)
        written += write_shard(os.path.join(out, name), shard)
        names.append((name, list(shard)))
        shard, size = {}, 0

    for key in sorted(base, key=lambda k: (0 if "embed" in k else 2 if not k.startswith("model.layers.") else 1, int(k.split(".")[2]) if k.startswith("model.layers.") else 0, k)):
        a, b = load(base[key]).to(torch.float32), load(other[key]).to(torch.float32)
        done += nbytes_of(base[key]) + nbytes_of(other[key])
        if method == "slerp":
            layer = int(key.split(".")[2]) if key.startswith("model.layers.") else (0 if "embed" in key else layers - 1)
            r = slerp(layer / max(1, layers - 1), a, b)
        else:
            r = ties(a, [b], [1.0], [0.5], True)
        r = r.to(torch.bfloat16)
        del a, b
        nbytes = r.numel() * 2
        if shard and size + nbytes > shard_bytes:
            flush()
        shard[key] = r
        size += nbytes
        print("progress %d %d %.2f" % (done, total, time.time() - started), file=sys.stderr, flush=True)
    if shard:
        flush()
    weight_map = {}
    for i, (name, keys) in enumerate(names):
        final = "model-%05d-of-%05d.safetensors" % (i + 1, len(names))
        os.rename(os.path.join(out, name), os.path.join(out, final))
        for k in keys:
            weight_map[k] = final
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(nbytes_of(base[k]) for k in base)}, "weight_map": dict(sorted(weight_map.items()))}, f)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpuSeconds": usage.ru_utime + usage.ru_stime, "bytesWritten": written, "shards": len(names), "maxRssKiB": usage.ru_maxrss}))


if __name__ == "__main__":
    main()
