#!/usr/bin/python3
"""kohya-ss sd-scripts' way of extracting a LoRA (networks/extract_lora_from_models.py), with
Debian's PyTorch, for the bench (bench/lora.ts) to run beside ours on the same files.

kohya loads both models whole, then per LoRA module: mat = (W_tuned - W_base).float() (a conv
flattened to [out, in*kh*kw]), U, S, Vh = torch.linalg.svd(mat) (the full SVD), U = U[:, :r] @
diag(S[:r]), Vh = Vh[:r], both clamped to +-(the 0.99 quantile of |their values|), saved. Here the
models are read as stored (fp16) and each module widened on its own; kohya builds the text encoder
and UNet in fp32 first, so its memory is at least this script's (about 2 x 4.3 GB for SD 1.5).
The safetensors package is not installed: the header is parsed with json/struct and tensors are
views into the file bytes through torch.frombuffer.

usage: kohya_extract_way.py TUNED BASE MODULES.json RANK OUT.json
MODULES.json: [{"name", "tensor", "rowStart", "rowCount"}, ...] (the same targets as ours).
Prints per module the kept energy sum(S_r^2) / sum(S^2); time and peak RSS in OUT.json.
"""
import json
import resource
import struct
import sys
import time

import torch

DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
CLAMP_QUANTILE = 0.99


def load(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        if info["dtype"] not in DTYPES or b == a:
            continue
        t = torch.frombuffer(data, dtype=DTYPES[info["dtype"]], count=(b - a) // torch.tensor([], dtype=DTYPES[info["dtype"]]).element_size(), offset=8 + n + a)
        tensors[name] = t.view(info["shape"])
    return data, tensors


def main():
    tuned_path, base_path, modules_path, rank, out_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    modules = json.load(open(modules_path))
    t0 = time.time()
    _, tuned = load(tuned_path)
    _, base = load(base_path)
    t_load = time.time() - t0
    kept = {}
    lora = {}
    with torch.no_grad():
        for m in modules:
            a = tuned[m["tensor"]][m["rowStart"] : m["rowStart"] + m["rowCount"]]
            b = base[m["tensor"]][m["rowStart"] : m["rowStart"] + m["rowCount"]]
            mat = (a.float() - b.float()).reshape(m["rowCount"], -1)
            r = min(rank, mat.shape[0], mat.shape[1])
            U, S, Vh = torch.linalg.svd(mat)
            kept[m["name"]] = float((S[:r] ** 2).sum() / (S ** 2).sum()) if float((S ** 2).sum()) > 0 else 1.0
            U = U[:, :r] @ torch.diag(S[:r])
            Vh = Vh[:r, :]
            dist = torch.cat([U.flatten(), Vh.flatten()])
            hi = torch.quantile(dist, CLAMP_QUANTILE)  # kohya: hi_val = quantile(dist), low_val = -hi_val
            lora[m["name"]] = (U.clamp(-hi, hi).half(), Vh.clamp(-hi, hi).half())
    seconds = time.time() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump({"seconds": seconds, "loadSeconds": t_load, "peakRss": peak_rss, "threads": torch.get_num_threads(), "torch": torch.__version__, "kept": kept}, open(out_path, "w"))


if __name__ == "__main__":
    main()
