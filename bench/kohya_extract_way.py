#!/usr/bin/python3
"""kohya-ss sd-scripts' way of extracting a LoRA (networks/extract_lora_from_models.py), with
Debian's PyTorch, for the bench (bench/lora.ts) to run beside ours on the same files.

kohya loads both models whole, then per LoRA module: mat = (W_tuned - W_base).float() (a conv
flattened to [out, in*kh*kw]), U, S, Vh = torch.linalg.svd(mat) (the full SVD: full_matrices is
torch's default, so a tall [out, in] module also builds the whole [out, out] U), U = U[:, :r] @
diag(S[:r]), Vh = Vh[:r], both clamped to +-(the 0.99 quantile of |their values|), saved. Without
--conv_dim (kohya's default) the 3x3 convs are not targets. Modules go in kohya's order (text
encoder, then UNet: the list the bench passes). Here the models are read as stored (fp16) and
each module widened on its own; kohya builds the text encoder and UNet in fp32 first, so its
memory is at least this script's (about 2 x 4.3 GB for SD 1.5). The safetensors package is not
installed: the header is parsed with json/struct and tensors are views into the file bytes
through torch.frombuffer.

Debian's torch links the netlib reference BLAS / LAPACK (BLAS_INFO=generic, /etc/alternatives/
libblas.so.3 -> blas/libblas.so.3): single-threaded and unblocked, the reason a full SVD of a
10240 x 1280 module takes minutes here. That is the pattern as this machine runs it by default;
the bench's --kohya-blas openblas runs it on Debian's threaded OpenBLAS instead (LD_LIBRARY_PATH),
closer to the MKL build kohya's users have. OUT.json lists the libraries loaded ("blas").

usage: kohya_extract_way.py TUNED BASE MODULES.json RANK OUT.json [BUDGET_SECONDS]
MODULES.json: [{"name", "tensor", "rowStart", "rowCount"}, ...] (the same targets as ours).
With a budget, no module starts once the budget is spent: OUT.json then says finished: false and
lists the modules done. OUT.json: time, CPU, peak RSS, per module its kept energy
sum(S_r^2) / sum(S^2), shape and seconds. OUT.json is rewritten after every module, so a run
stopped from outside still leaves the modules it did.
"""
import json
import os
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


def blas_libraries():
    """The BLAS / LAPACK shared objects this process loaded (the bench's --kohya-blas picks them)."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if ("blas" in line or "lapack" in line) and "/" in line})


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main():
    tuned_path, base_path, modules_path, rank, out_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    budget = float(sys.argv[6]) if len(sys.argv) > 6 else float("inf")
    modules = json.load(open(modules_path))
    t0 = time.time()
    _, tuned = load(tuned_path)
    _, base = load(base_path)
    t_load = time.time() - t0
    kept = {}
    done = []
    lora = {}

    def report(finished):
        result = {"finished": finished, "modulesTotal": len(modules), "modulesDone": len(done), "seconds": time.time() - t0, "loadSeconds": t_load,
                  "cpuSeconds": cpu_seconds(), "peakRss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "blas": blas_libraries(), "budgetSeconds": budget if budget != float("inf") else None, "kept": kept, "modules": done}
        tmp = out_path + ".partial"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, out_path)

    with torch.no_grad():
        for m in modules:
            if time.time() - t0 > budget:
                break
            t_module = time.time()
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
            done.append({"name": m["name"], "rows": mat.shape[0], "cols": mat.shape[1], "seconds": time.time() - t_module, "kept": kept[m["name"]]})
            print(f"kohya pattern: {len(done)}/{len(modules)} {m['name']} {mat.shape[0]}x{mat.shape[1]} {done[-1]['seconds']:.1f} s (total {time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            report(False)
    report(len(done) == len(modules))


if __name__ == "__main__":
    main()
