"""The classic job done the way the classic tool does it, for the bench (bench/many-extras.ts
`--torch-way`): AUTOMATIC1111's checkpoint merger (modules/extras.py run_modelmerger, the code
the Merge Board extension calls per row), with real PyTorch (Debian's python3-torch).

Its order of work, which sets its time and memory:
  1. B's whole state dict is loaded (sd_models.read_state_dict: every tensor in its own CPU storage);
  2. add difference: C's whole state dict too, then B[key] = B[key] - C[key] for every key that
     contains "model" (zeros where C lacks it), and C is freed;
  3. A's whole state dict is loaded;
  4. A[key] = (1 - M) * A[key] + M * B[key] (weighted sum) or A[key] + M * B[key] (add difference)
     for every key that contains "model" and is in B; then .half() when saving as fp16;
  5. keys of B missing from A are added (halved too); the dict is saved whole.

  python3 bench/a1111_way.py OUT METHOD MULTIPLIER HALF A B [C]

METHOD: weighted-sum or add-difference; HALF: 1 to save as fp16 (the classic "save as float16"),
0 to keep the dtypes. Prints one JSON line: seconds to load, merge and write, the peak resident
set (ru_maxrss) and PyTorch's thread count. The safetensors files are parsed by hand (torch 1.13
has no safetensors module): each tensor is read into its own storage, as safetensors.torch.load_file
gives it, and written from its storage, as save_file does (no second copy of the whole file).
"""
import json
import os
import resource
import struct
import sys
import time

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}


def byte_view(t):
    """The tensor's storage as a writable numpy uint8 array (0-d and empty tensors included)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def read_state_dict(path):
    tensors = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        for key, e in header.items():
            if key == "__metadata__":
                continue
            begin, end = e["data_offsets"]
            t = torch.empty(e["shape"], dtype=DTYPES[e["dtype"]])
            if end > begin:
                f.seek(8 + n + begin)
                f.readinto(byte_view(t))
            tensors[key] = t
    return tensors


def save_state_dict(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, t in tensors.items():
        size = t.numel() * t.element_size()
        header[key] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".partial"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in tensors.values():
            if t.numel() > 0:
                f.write(byte_view(t.contiguous()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main():
    out, method, multiplier, half = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
    a_path, b_path, *rest = sys.argv[5:]
    if method not in ("weighted-sum", "add-difference") or (method == "add-difference") != (len(rest) == 1):
        sys.exit("usage: a1111_way.py OUT weighted-sum|add-difference MULTIPLIER HALF A B [C]")
    t0 = time.time()
    merge_seconds = 0.0
    with torch.no_grad():
        theta_1 = read_state_dict(b_path)
        if method == "add-difference":
            theta_2 = read_state_dict(rest[0])
            m0 = time.time()
            for key in theta_1.keys():
                if "model" in key:
                    theta_1[key] = theta_1[key] - theta_2[key] if key in theta_2 else torch.zeros_like(theta_1[key])
            merge_seconds += time.time() - m0
            del theta_2
        theta_0 = read_state_dict(a_path)
        t1 = time.time()
        for key in theta_0.keys():
            if "model" in key and key in theta_1:
                a, b = theta_0[key], theta_1[key]
                theta_0[key] = (1 - multiplier) * a + multiplier * b if method == "weighted-sum" else a + multiplier * b
                if half:
                    theta_0[key] = theta_0[key].half()
        for key in theta_1.keys():
            if "model" in key and key not in theta_0:
                theta_0[key] = theta_1[key].half() if half else theta_1[key]
        del theta_1
    t2 = time.time()
    merge_seconds += t2 - t1
    save_state_dict(out, theta_0)
    t3 = time.time()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"secondsLoad": (t2 - t0) - merge_seconds, "secondsMerge": merge_seconds, "secondsWrite": t3 - t2, "seconds": t3 - t0, "peakRss": peak, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
