/**
 * Reading LoRA files: a safetensors header (validated like any model, lib/formats/safetensors.ts),
 * then its tensors grouped into modules by the suffixes of the trainers in use:
 *
 * - kohya-ss sd-scripts (networks/lora.py): `<name>.lora_down.weight` [r, in(, kh, kw)],
 *   `<name>.lora_up.weight` [out, r(, 1, 1)], `<name>.alpha` []; LoCon 3×3 convs have a 4-D down;
 *   LyCORIS Tucker convs add `<name>.lora_mid.weight` [r, r, kh, kw] (baked through lib/lora/tucker.ts);
 * - LyCORIS LoHa (`hada_w1_a` [out, r], `hada_w1_b` [r, in·k], `hada_w2_a`, `hada_w2_b`; `hada_t1`/
 *   `hada_t2` for Tucker) and LoKr (`lokr_w1`, `lokr_w1_a`/`_b`, `lokr_w2`, `lokr_w2_a`/`_b`,
 *   `lokr_t2` for Tucker; Tucker factors are reduced by lib/lora/tucker.ts);
 * - PEFT / diffusers: `<name>.lora_A.weight` (= down), `<name>.lora_B.weight` (= up), and the
 *   older diffusers `<name>.lora.down.weight` / `.lora.up.weight`, `.lora_linear_layer.*`, and
 *   attention processors `<block>.processor.to_q_lora.down.weight` (→ `<block>.to_q`).
 *
 * Everything read here is untrusted: shapes and ranks are checked (a module's up and down agree
 * on the rank, alpha is a finite scalar), and every problem is a MergeError naming the file and
 * the tensor. Only the alpha scalars' bytes are read; factors stay in the file, read by the
 * engines (lib/native/job.ts `LowRankOperand`), which re-check every byte range.
 */
import { open } from "node:fs/promises";
import { DTYPE_SIZE, isMathDtype } from "../dtypes";
import { MergeError, fsError } from "../errors";
import { openModel } from "../formats";
import { widenScalar } from "./scalar";
import type { ModelFile, TensorInfo } from "../model";
import { shapeToString } from "../model";

/** Factor roles, by trainer suffix. */
type Role =
  | "down" | "up" | "mid" | "alpha"
  | "hada_w1_a" | "hada_w1_b" | "hada_w2_a" | "hada_w2_b" | "hada_t1" | "hada_t2"
  | "lokr_w1" | "lokr_w1_a" | "lokr_w1_b" | "lokr_w2" | "lokr_w2_a" | "lokr_w2_b" | "lokr_t2"
  | "unsupported";

/** The key naming a file uses. */
export type LoraNaming = "kohya" | "peft" | "diffusers";
/** The decomposition of one module. */
export type LoraAlgorithm = "lora" | "locon" | "tucker" | "loha" | "lokr";

const SUFFIXES: [suffix: string, role: Role, naming: LoraNaming | undefined][] = [
  [".lora_down.weight", "down", "kohya"],
  [".lora_up.weight", "up", "kohya"],
  [".lora_mid.weight", "mid", "kohya"],
  [".lora_A.default.weight", "down", "peft"],
  [".lora_B.default.weight", "up", "peft"],
  [".lora_A.weight", "down", "peft"],
  [".lora_B.weight", "up", "peft"],
  [".lora_linear_layer.down.weight", "down", "diffusers"],
  [".lora_linear_layer.up.weight", "up", "diffusers"],
  [".lora.down.weight", "down", "diffusers"],
  [".lora.up.weight", "up", "diffusers"],
  [".alpha", "alpha", undefined],
  ...(["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"] as const)
    .map((r): [string, Role, undefined] => [`.${r}`, r, undefined]),
  // Other LyCORIS / trainer types: recognised so that they are reported, never baked wrongly.
  ...[".dora_scale", ".diff", ".diff_b", ".on_input", ".w_norm", ".b_norm", ".oft_blocks", ".oft_diag", ".lora_up.bias", ".lora_B.bias"]
    .map((s): [string, Role, undefined] => [s, "unsupported", undefined]),
];

/** Old diffusers attention processors: `<block>.processor.to_q_lora.down.weight`. */
const PROCESSOR = /^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;

export interface LoraModule {
  /** The module's name as stored, without the tensor suffix (`lora_unet_…_to_q`, `unet.….to_q`). */
  name: string;
  algorithm: LoraAlgorithm;
  /** Rank r (LoHa: of the first product; the second is checked equal). */
  rank: number;
  /** The alpha value stored, if any; scale = alpha / rank, 1 without alpha (kohya's rule). */
  alpha?: number;
  scale: number;
  /** ΔW rows (output features) and columns (input features × kernel). */
  rows: number;
  cols: number;
  /** Kernel [kh, kw] of a conv module's down factor, [] for a linear one. */
  kernel: number[];
  /** The factor tensors by role ("up", "down"; LoHa "hada_w1_a" …). */
  factors: Partial<Record<Role, TensorInfo>>;
  /** Why the module cannot be baked (Tucker, LoKr, DoRA …); unset when it can. */
  unsupported?: string;
}

export interface LoraFile {
  path: string;
  model: ModelFile;
  naming: LoraNaming;
  modules: LoraModule[];
  /** Tensors that belong to no module (reported, ignored). */
  strayTensors: string[];
}

/** Splits a key into module name and role, or undefined for a key of no known suffix. */
function roleOf(key: string): { module: string; role: Role; naming: LoraNaming | undefined } | undefined {
  const p = PROCESSOR.exec(key);
  if (p) return { module: `${p[1]}.${p[2] === "to_out" ? "to_out.0" : p[2]}`, role: p[3] === "down" ? "down" : "up", naming: "diffusers" };
  for (const [suffix, role, naming] of SUFFIXES) if (key.endsWith(suffix) && key.length > suffix.length) return { module: key.slice(0, -suffix.length), role, naming };
  return undefined;
}

/** True when the tensor names look like a LoRA / LyCORIS file (used by inspect and list). */
export function looksLikeLora(names: Iterable<string>): boolean {
  let total = 0, roles = 0;
  for (const n of names) {
    total++;
    const r = roleOf(n);
    if (r && r.role !== "unsupported") roles++;
  }
  return total > 0 && roles >= total * 0.5 && roles > 0;
}

function invalid(file: string, tensor: string, message: string): MergeError {
  return new MergeError("LORA_INVALID", `${file}: ${tensor}: ${message}`, { path: file, tensor });
}

/** Shape [a, b] or [a, b, 1, 1] (a linear factor stored as a 1×1 conv): its two sizes. */
function matrixOf(file: string, t: TensorInfo, what: string): [number, number] {
  const s = t.shape;
  if (s.length === 2 || (s.length === 4 && s[2] === 1 && s[3] === 1)) return [s[0]!, s[1]!];
  throw invalid(file, t.name, `${what} must be 2-D (or [n, m, 1, 1]), got ${shapeToString(s)}`);
}

function checkFloat(file: string, t: TensorInfo): void {
  if (!isMathDtype(t.dtype)) throw invalid(file, t.name, `dtype ${t.dtype} is not a float type`);
}

/** A kohya / PEFT / diffusers LoRA (or LoCon) module, checked. */
function loraModule(file: string, name: string, f: Partial<Record<Role, TensorInfo>>, alpha: number | undefined): LoraModule {
  const { up, down, mid } = f;
  if (!up || !down) throw invalid(file, (up ?? down ?? f.alpha)!.name, `module ${name} has ${up ? "an up" : down ? "a down" : "an alpha but no"} factor${up || down ? ` but no ${up ? "down" : "up"} factor` : "s"}`);
  checkFloat(file, up);
  checkFloat(file, down);
  const [rows, upRank] = matrixOf(file, up, "the up factor");
  const ds = down.shape;
  if (!(ds.length === 2 || ds.length === 4)) throw invalid(file, down.name, `the down factor must be 2-D or 4-D (a conv), got ${shapeToString(ds)}`);
  const rank = ds[0]!;
  const kernel = ds.length === 4 ? [ds[2]!, ds[3]!] : [];
  const cols = ds.slice(1).reduce((a, b) => a * b, 1);
  if (rank < 1 || rows < 1 || cols < 1) throw invalid(file, down.name, `empty factor ${shapeToString(ds)}`);
  if (mid) {
    // LyCORIS Tucker LoCon: up [out, r1](, 1, 1), mid [r1, r2, kh, kw], down [r2, in](, 1, 1);
    // ΔW = einsum("n m k l, i n, m j -> i j k l", mid, up, down) (lib/lora/tucker.ts).
    checkFloat(file, mid);
    if (!(ds.length === 2 || (ds[2] === 1 && ds[3] === 1))) throw invalid(file, down.name, `with lora_mid, the down factor must be [rank, in] or [rank, in, 1, 1], got ${shapeToString(ds)}`);
    if (mid.shape.length !== 4 || mid.shape[0] !== upRank || mid.shape[1] !== rank) throw invalid(file, mid.name, `lora_mid ${shapeToString(mid.shape)} does not fit up ${shapeToString(up.shape)} and down ${shapeToString(ds)}`);
    return { name, algorithm: "tucker", rank, ...(alpha !== undefined ? { alpha } : {}), scale: alpha !== undefined ? alpha / rank : 1, rows, cols: ds[1]! * mid.shape[2]! * mid.shape[3]!, kernel: [mid.shape[2]!, mid.shape[3]!], factors: f };
  }
  if (upRank !== rank) throw invalid(file, up.name, `rank mismatch: the up factor ${shapeToString(up.shape)} has rank ${upRank}, the down factor ${shapeToString(ds)} has rank ${rank}`);
  return { name, algorithm: kernel.length && (kernel[0]! > 1 || kernel[1]! > 1) ? "locon" : "lora", rank, ...(alpha !== undefined ? { alpha } : {}), scale: alpha !== undefined ? alpha / rank : 1, rows, cols, kernel, factors: f };
}

/**
 * A LyCORIS LoHa module: ΔW = (w1a·w1b) ⊙ (w2a·w2b), scale alpha / rank (rank = w1b rows). A
 * product with a Tucker core (`hada_t1` / `hada_t2` [r, r, kh, kw]) stores w_a [r, out] and
 * w_b [r, in] and is einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a) (AUTOMATIC1111
 * `lyco_helpers.make_weight_cp`, LyCORIS `functional/loha.py`); each product may have one or not.
 */
function lohaModule(file: string, name: string, f: Partial<Record<Role, TensorInfo>>, alpha: number | undefined): LoraModule {
  const need = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"] as const;
  for (const r of need) if (!f[r]) throw invalid(file, name, `LoHa module lacks ${r}`);
  for (const r of need) checkFloat(file, f[r]!);
  const product = (a: TensorInfo, b: TensorInfo, t: TensorInfo | undefined): { rows: number; cols: number; rank: number; kernel: number[] } => {
    if (t) {
      checkFloat(file, t);
      const [ra, out] = matrixOf(file, a, a.name.slice(name.length + 1));
      const [rb, inputs] = matrixOf(file, b, b.name.slice(name.length + 1));
      if (t.shape.length !== 4 || t.shape[0] !== ra || t.shape[1] !== rb) throw invalid(file, t.name, `Tucker core ${shapeToString(t.shape)} does not fit ${shapeToString(a.shape)} and ${shapeToString(b.shape)}`);
      return { rows: out, cols: inputs * t.shape[2]! * t.shape[3]!, rank: rb, kernel: [t.shape[2]!, t.shape[3]!] };
    }
    const [rows, r1] = matrixOf(file, a, a.name.slice(name.length + 1));
    const [rank, cols] = matrixOf(file, b, b.name.slice(name.length + 1));
    if (r1 !== rank) throw invalid(file, a.name, `rank mismatch: ${shapeToString(a.shape)} and ${shapeToString(b.shape)}`);
    return { rows, cols, rank, kernel: [] };
  };
  const p1 = product(f.hada_w1_a!, f.hada_w1_b!, f.hada_t1);
  const p2 = product(f.hada_w2_a!, f.hada_w2_b!, f.hada_t2);
  if (p1.rows !== p2.rows || p1.cols !== p2.cols) throw invalid(file, f.hada_w2_b!.name, `the two LoHa products have different shapes ([${p1.rows}, ${p1.cols}] and [${p2.rows}, ${p2.cols}])`);
  const rank = p1.rank;
  return { name, algorithm: "loha" as const, rank, ...(alpha !== undefined ? { alpha } : {}), scale: alpha !== undefined ? alpha / rank : 1, rows: p1.rows, cols: p1.cols, kernel: p1.kernel.length ? p1.kernel : p2.kernel, factors: f };
}

/**
 * A LyCORIS LoKr module: ΔW = w1 ⊗ w2 (AUTOMATIC1111 `extensions-builtin/Lora/network_lokr.py`
 * `make_kron`), each factor full or a product (`lokr_w1_a`·`lokr_w1_b`); a full 4-D w2 is a conv
 * kernel (w1 ⊗ w2 over [out, in] with the kernel kept). scale = alpha / rank when a factor is a
 * product (rank = its inner size, w1's first, as A1111 and LyCORIS), else 1.
 */
function lokrModule(file: string, name: string, f: Partial<Record<Role, TensorInfo>>, alpha: number | undefined): LoraModule {
  const factor = (full: TensorInfo | undefined, a: TensorInfo | undefined, b: TensorInfo | undefined, which: string, t?: TensorInfo): { rows: number; cols: number; rank: number; kernel: number; shape: number[] } => {
    if (full) {
      checkFloat(file, full);
      if (full.shape.length !== 2 && full.shape.length !== 4) throw invalid(file, full.name, `${which} must be 2-D or 4-D, got ${shapeToString(full.shape)}`);
      const kernel = full.shape.length === 4 ? full.shape[2]! * full.shape[3]! : 1;
      return { rows: full.shape[0]!, cols: full.shape.slice(1).reduce((x, y) => x * y, 1), rank: 0, kernel, shape: full.shape };
    }
    if (!a || !b) throw invalid(file, name, `LoKr module lacks ${which} (or its _a/_b pair)`);
    checkFloat(file, a);
    checkFloat(file, b);
    if (t) {
      // Tucker w2: a [r, out2], b [r, in2], t [r, r, kh, kw]: make_weight_cp as for LoHa.
      checkFloat(file, t);
      const [ra, out] = matrixOf(file, a, `${which}_a`);
      const [rb, inputs] = matrixOf(file, b, `${which}_b`);
      if (t.shape.length !== 4 || t.shape[0] !== ra || t.shape[1] !== rb) throw invalid(file, t.name, `Tucker core ${shapeToString(t.shape)} does not fit ${which}_a ${shapeToString(a.shape)} and ${which}_b ${shapeToString(b.shape)}`);
      const kernel = t.shape[2]! * t.shape[3]!;
      return { rows: out, cols: inputs * kernel, rank: rb, kernel, shape: [out, inputs, t.shape[2]!, t.shape[3]!] };
    }
    const [rows, rank] = matrixOf(file, a, `${which}_a`);
    if (b.shape[0] !== rank) throw invalid(file, b.name, `rank mismatch: ${which}_a ${shapeToString(a.shape)} and ${which}_b ${shapeToString(b.shape)}`);
    return { rows, cols: b.shape.slice(1).reduce((x, y) => x * y, 1), rank, kernel: 1, shape: [rows, ...b.shape.slice(1)] };
  };
  const w1 = factor(f.lokr_w1, f.lokr_w1_a, f.lokr_w1_b, "lokr_w1");
  const w2 = factor(f.lokr_w2, f.lokr_w2_a, f.lokr_w2_b, "lokr_w2", f.lokr_t2);
  if (w1.kernel !== 1) throw invalid(file, f.lokr_w1!.name, `lokr_w1 must be 2-D, got ${shapeToString(w1.shape)}`);
  const rank = w1.rank || w2.rank;
  if (f.lokr_t2 && f.lokr_w2) throw invalid(file, f.lokr_t2.name, "lokr_t2 comes with lokr_w2_a / lokr_w2_b, not with a full lokr_w2");
  return {
    name, algorithm: "lokr" as const, rank, ...(alpha !== undefined ? { alpha } : {}), scale: alpha !== undefined && rank > 0 ? alpha / rank : 1,
    rows: w1.rows * w2.rows, cols: w1.cols * w2.cols, kernel: w2.kernel > 1 ? w2.shape.slice(2) : [], factors: f,
  };
}

/** Reads the alpha scalars (a few bytes each) of the modules that have one. */
async function readAlphas(model: ModelFile, alphas: TensorInfo[]): Promise<Map<string, number>> {
  const values = new Map<string, number>();
  if (alphas.length === 0) return values;
  let handle;
  try {
    handle = await open(model.path, "r");
  } catch (e) {
    throw fsError(e, model.path, "opening the LoRA");
  }
  try {
    for (const t of alphas) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (n !== 1 || t.shape.length > 1) throw invalid(model.path, t.name, `alpha must be a scalar, got ${shapeToString(t.shape)}`);
      checkFloat(model.path, t);
      const bytes = Buffer.alloc(DTYPE_SIZE[t.dtype]);
      const { bytesRead } = await handle.read(bytes, 0, bytes.length, t.offset);
      if (bytesRead !== bytes.length) throw new MergeError("FILE_TRUNCATED", `${model.path}: ${t.name}: the file ends before the alpha value`, { path: model.path, tensor: t.name });
      const v = widenScalar(bytes, t.dtype);
      if (!Number.isFinite(v)) throw invalid(model.path, t.name, `alpha ${v} is not a finite number`);
      values.set(t.name, v);
    }
  } catch (e) {
    if (e instanceof MergeError) throw e;
    throw fsError(e, model.path, "reading alpha values");
  } finally {
    await handle.close();
  }
  return values;
}

/** Groups an opened file's tensors into modules; throws LORA_INVALID on a malformed module. */
export async function readLoraModel(model: ModelFile): Promise<LoraFile> {
  const groups = new Map<string, Partial<Record<Role, TensorInfo>>>();
  const unsupported = new Map<string, string>();
  const namings = new Map<LoraNaming, number>();
  const strayTensors: string[] = [];
  for (const t of model.tensors) {
    const r = roleOf(t.name);
    if (!r) {
      strayTensors.push(t.name);
      continue;
    }
    if (r.naming) namings.set(r.naming, (namings.get(r.naming) ?? 0) + 1);
    let g = groups.get(r.module);
    if (!g) groups.set(r.module, (g = {}));
    if (r.role === "unsupported") {
      unsupported.set(r.module, `${t.name.slice(r.module.length + 1)} (${t.name.endsWith("dora_scale") ? "DoRA" : "an unsupported LyCORIS type"}) is not baked`);
      continue;
    }
    if (g[r.role]) throw new MergeError("DUPLICATE_TENSOR", `${model.path}: ${t.name}: module ${r.module} has two ${r.role} tensors`, { path: model.path, tensor: t.name });
    g[r.role] = t;
  }
  const alphas = await readAlphas(model, [...groups.values()].flatMap((g) => (g.alpha ? [g.alpha] : [])));
  const modules: LoraModule[] = [];
  for (const [name, f] of groups) {
    const alpha = f.alpha ? alphas.get(f.alpha.name) : undefined;
    let m: LoraModule;
    if (f.hada_w1_a || f.hada_w1_b || f.hada_w2_a || f.hada_w2_b) m = lohaModule(model.path, name, f, alpha);
    else if (f.lokr_w1 || f.lokr_w1_a || f.lokr_w2 || f.lokr_w2_a) m = lokrModule(model.path, name, f, alpha);
    else if (f.up || f.down) m = loraModule(model.path, name, f, alpha);
    else if (unsupported.has(name)) m = { name, algorithm: "lora", rank: 0, scale: 1, rows: 0, cols: 0, kernel: [], factors: f, unsupported: unsupported.get(name)! };
    else {
      strayTensors.push(f.alpha!.name); // an alpha of no module
      continue;
    }
    if (unsupported.has(name) && !m.unsupported) m.unsupported = unsupported.get(name)!;
    modules.push(m);
  }
  if (modules.length === 0) throw new MergeError("LORA_INVALID", `${model.path}: no LoRA modules (no lora_down/lora_up, lora_A/lora_B or LyCORIS tensors)`, { path: model.path });
  const naming = [...namings.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "kohya";
  return { path: model.path, model, naming, modules, strayTensors };
}

/** Opens a LoRA file (safetensors; a .ckpt / .pt LoRA is read the same way, never executed). */
export async function openLora(path: string): Promise<LoraFile> {
  return readLoraModel(await openModel(path));
}
