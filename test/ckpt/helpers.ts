/**
 * Shared by the ckpt tests: temporary folders, real PyTorch through /usr/bin/python3, and a
 * small .ckpt writer that fills a layout the way an engine would (literals, tensor bytes at
 * their offsets, CRC-32 of each range, then the finish() patches).
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import type { Dtype } from "../../lib/dtypes";
import { layoutCkpt, type CkptLayoutOptions } from "../../lib/formats/ckpt/writer";
import type { TensorInfo } from "../../lib/model";

export const PYTHON = "/usr/bin/python3";

/** A temporary folder removed by the returned cleanup. */
export function tempDir(prefix = "tm-ckpt-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let pythonOk: boolean | undefined;
let torchOk: boolean | undefined;
let torchWhy = "";

export function pythonAvailable(): boolean {
  pythonOk ??= spawnSync(PYTHON, ["-c", "import pickle, zipfile"], { encoding: "utf8" }).status === 0;
  return pythonOk;
}

export function torchAvailable(): boolean {
  if (torchOk === undefined) {
    const r = spawnSync(PYTHON, ["-c", "import torch, numpy; print(torch.__version__)"], { encoding: "utf8" });
    torchOk = r.status === 0;
    torchWhy = torchOk ? "" : (r.error?.message ?? r.stderr.trim().split("\n").pop() ?? "unknown error");
  }
  return torchOk;
}

/**
 * Call in a `before`/test: skips when PyTorch is missing, except in CI, where the interop
 * tests are part of what must pass (.ci/run installs python3-torch).
 */
export function requireTorch(ctx: Mocha.Context): void {
  if (torchAvailable()) return;
  const reason = `PyTorch is not importable by ${PYTHON} (${torchWhy}); install python3-torch to run the interop tests`;
  if (process.env.CI) throw new Error(`${reason} — required in CI`);
  console.log(`      skipped: ${reason}`);
  ctx.skip();
}

export function requirePython(ctx: Mocha.Context): void {
  if (pythonAvailable()) return;
  if (process.env.CI) throw new Error(`${PYTHON} is required in CI`);
  console.log(`      skipped: ${PYTHON} is not available`);
  ctx.skip();
}

/** Runs a Python script (argv after it); returns stdout, throws with stderr on failure. */
export function runPython(script: string, args: string[] = [], timeout = 120_000): string {
  const r = spawnSync(PYTHON, ["-c", script, ...args], { encoding: "utf8", timeout, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`python failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** Python: dumps every tensor of a state dict as raw bytes + manifest.json in a folder. */
export const PY_DUMP = String.raw`
import json, torch
def dump(sd, outdir):
    manifest = []
    for i, (k, t) in enumerate(sd.items()):
        if not isinstance(t, torch.Tensor):
            continue
        x = t.detach().contiguous()
        if x.dtype == torch.bfloat16:
            x = x.view(torch.int16)
        with open(f"{outdir}/{i}.bin", "wb") as f:
            f.write(x.numpy().tobytes())
        manifest.append({"name": k, "dtype": str(t.dtype), "shape": list(t.shape), "file": f"{i}.bin"})
    with open(f"{outdir}/manifest.json", "w") as f:
        json.dump(manifest, f)
`;

export interface PyManifestEntry {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
}

export const TORCH_DTYPE: Record<string, Dtype> = {
  "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64",
  "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8", "torch.uint8": "U8", "torch.bool": "BOOL",
};

/** Reads a tensor's bytes from a file at the range the reader reported. */
export function readTensorBytes(path: string, t: TensorInfo): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(t.byteLength);
    let done = 0;
    while (done < t.byteLength) {
      const n = readSync(fd, buf, done, t.byteLength - done, t.offset + done);
      if (n === 0) throw new Error(`short read of ${t.name}`);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

export interface CkptTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  data: Uint8Array;
}

/** Writes a .ckpt through layoutCkpt as an engine would. Returns the layout for inspection. */
export function writeCkpt(path: string, tensors: CkptTensor[], metadata: Record<string, string> = {}, options: CkptLayoutOptions = {}, corruptCrc = false) {
  const layout = layoutCkpt(tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata, options);
  const fd = openSync(path, "w");
  try {
    ftruncateSync(fd, layout.size);
    for (const l of layout.literals) writeSync(fd, l.data, 0, l.data.length, l.offset);
    tensors.forEach((t, i) => {
      if (t.data.length !== layout.crc32Ranges![i]!.length) throw new Error(`test data for ${t.name} has the wrong size`);
      writeSync(fd, t.data, 0, t.data.length, layout.offsets[i]!);
    });
    const crcs = tensors.map((t) => (crc32(t.data) ^ (corruptCrc ? 1 : 0)) >>> 0);
    for (const p of layout.finish!(crcs)) writeSync(fd, p.data, 0, p.data.length, p.offset);
  } finally {
    closeSync(fd);
  }
  return layout;
}

/** Deterministic bytes for a test tensor (valid finite floats for float dtypes). */
export function testBytes(dtype: Dtype, numel: number, seed: number): Uint8Array {
  const size = { BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8 }[dtype];
  const out = Buffer.alloc(numel * size);
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s);
  for (let i = 0; i < numel; i++) {
    const v = (next() / 2 ** 32 - 0.5) * 8;
    switch (dtype) {
      case "F32": out.writeFloatLE(v, i * 4); break;
      case "F64": out.writeDoubleLE(v, i * 8); break;
      case "F16": out.writeUInt16LE((next() & 0x3bff) | ((next() & 1) << 15), i * 2); break; // |x| < 1, finite
      case "BF16": out.writeUInt16LE((next() & 0x3f7f) | ((next() & 1) << 15), i * 2); break;
      case "I64": out.writeBigInt64LE(BigInt(Math.trunc(v * 1e6)) * 1000003n, i * 8); break;
      case "I32": out.writeInt32LE(Math.trunc(v * 1e8), i * 4); break;
      case "I16": out.writeInt16LE(Math.trunc(v * 4000), i * 2); break;
      case "BOOL": out[i] = next() & 1; break;
      default: out[i] = next() & 0xff;
    }
  }
  return out;
}
