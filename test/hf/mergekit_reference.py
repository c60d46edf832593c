"""mergekit's per-tensor formulas in real PyTorch (Debian's python3-torch), for test/hf: the
expected values of slerp, ties and model stock, independent of tensormerge's kernels.

Written from mergekit's published method descriptions (merge_methods/slerp.py,
generalized_task_arithmetic.py + sparsify.py magnitude, model_stock.py). Input on stdin, JSON:
  {"method": "slerp" | "ties" | "model_stock", "base": DIR, "models": [DIR...],
   "t": {name: t} (slerp), "weights": [{name: w}...], "densities": [{name: d}...],
   "normalize": bool}
Output on stdout, JSON: {name: [float, ...]} computed in float32 (mergekit with dtype float32).
passthrough (merge_methods/passthrough.py: `tensor * scale` when the source's scale is set,
the tensor unchanged otherwise), in the merge dtype as mergekit computes it:
  {"method": "passthrough", "base": DIR, "sources": {output name: input name},
   "scales": {output name: scale or null}, "dtype": "bfloat16" | "float16" | "float32"}
Safetensors files are parsed by hand (torch 1.13 has no safetensors).
"""
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_folder(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        for key, e in header.items():
            if key == "__metadata__":
                continue
            b, end = e["data_offsets"]
            raw = bytearray(data[8 + n + b : 8 + n + end])
            t = torch.frombuffer(raw, dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
            tensors[key] = t.to(torch.float32)
    return tensors


def slerp(t, v0, v1, dot_threshold=0.9995, eps=1e-8):
    a, b = v0.flatten(), v1.flatten()
    na, nb = torch.norm(a), torch.norm(b)
    a_unit = a / na if na > eps else a
    b_unit = b / nb if nb > eps else b
    dot = torch.sum(a_unit * b_unit)
    if torch.abs(dot) > dot_threshold:
        return (1 - t) * v0 + t * v1
    theta0 = torch.arccos(dot)
    s0 = torch.sin(theta0 - theta0 * t) / torch.sin(theta0)
    s1 = torch.sin(theta0 * t) / torch.sin(theta0)
    return s0 * v0 + s1 * v1


def magnitude_prune(delta, density):
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    mask = torch.zeros_like(delta).flatten()
    if k > 0:
        mask[torch.topk(delta.abs().flatten(), k=k, largest=True).indices] = 1
    return delta * mask.reshape(delta.shape)


def ties(base, xs, weights, densities, normalize):
    deltas = torch.stack([magnitude_prune(x - base, d) for x, d in zip(xs, densities)])
    w = torch.tensor(weights, dtype=torch.float32).reshape([-1] + [1] * base.dim())
    weighted = deltas * w
    majority = (weighted.sum(dim=0) >= 0).to(torch.float32) * 2 - 1
    mask = (weighted.sign() == majority).to(torch.float32)
    mixed = (weighted * mask).sum(dim=0)
    divisor = (w * mask).sum(dim=0)
    divisor[divisor == 0] = 1
    if normalize:
        mixed = mixed / divisor
    return base + mixed


def model_stock(base, xs):
    w0 = base.flatten()
    offsets = [x.flatten() - w0 for x in xs]
    cos = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            norm = torch.norm(offsets[i]) * torch.norm(offsets[j])
            cos.append(((offsets[i] * offsets[j]).sum() / norm.clamp(min=1e-6)).clamp(-1, 1))
    c = torch.stack(cos).mean()
    n = len(xs)
    t = (n * c) / (1 + (n - 1) * c)
    avg = sum(xs) / n
    return t * avg + (1 - t) * base


def passthrough(req, base):
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[req["dtype"]]
    out = {}
    for name, source in req["sources"].items():
        tensor = base[source].to(dtype)
        scale = req["scales"].get(name)
        if scale is not None:
            tensor = tensor * scale
        out[name] = tensor.to(torch.float32).flatten().tolist()
    return out


def main():
    req = json.load(sys.stdin)
    base = read_folder(req["base"])
    if req["method"] == "passthrough":
        json.dump(passthrough(req, base), sys.stdout)
        return
    models = [read_folder(m) for m in req["models"]]
    out = {}
    for name, b in base.items():
        xs = [m[name] for m in models]
        if req["method"] == "slerp":
            r = slerp(req["t"][name], b, xs[0])
        elif req["method"] == "ties":
            r = ties(b, xs, [w[name] for w in req["weights"]], [d[name] for d in req["densities"]], req["normalize"])
        elif req["method"] == "model_stock":
            r = model_stock(b, xs)
        else:
            raise SystemExit("unknown method " + req["method"])
        out[name] = r.flatten().tolist()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
