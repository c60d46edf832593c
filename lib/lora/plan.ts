/**
 * Baking LoRAs into a checkpoint, as job pieces: W' = W + Σ_k ratio_k · scale_k · ΔW_k, with
 * scale = alpha / rank (1 without alpha) and ΔW = up·down (kohya-ss sd-scripts
 * `networks/merge_lora.py` `merge_to_sd_model`: `weight + ratio * (up @ down) * scale`; convs
 * flattened to [out, in·kh·kw], which is the same product as its `conv2d` of the permuted
 * factors), LoHa ΔW = (w1a·w1b) ⊙ (w2a·w2b) (LyCORIS; AUTOMATIC1111
 * `extensions-builtin/Lora/network_hada.py`), LoKr ΔW = w1 ⊗ w2 (`network_lokr.py`), a Kronecker
 * operand of the job.
 *
 * Each ΔW is a low-rank operand (lib/native/job.ts `LowRankOperand`): the engines compute it
 * block by block from the factors in the LoRA file, never materialised. Per tensor (or per row
 * slice, where one tensor holds several modules, OpenCLIP's in_proj), the ops are a chain of
 * `weighted-sum(prev, ΔW_k, 1, fp32(ratio_k · scale_k))` = prev + ΔW_k · c_k (prev · 1 is exact),
 * in fp32, LoRAs in the order given; only the last op rounds, into the output dtype, so a bake
 * into fp16 / bf16 / fp8 widens, adds in fp32 and rounds once.
 */
import { DTYPES, DTYPE_ID, DTYPE_SIZE, isMathDtype, isNarrowFloat, type Dtype } from "../dtypes";
import { MergeError } from "../errors";
import { ARCHITECTURES, type ArchitectureId } from "../library/identify";
import { numelOf, shapeToString, type ModelFile } from "../model";
import { KERNEL_ID, type JobOp, type JobPiece, type KroneckerFactor, type KroneckerOperand, type LowRankOperand, type LowRankProduct, type Operand } from "../native/job";
import { refuseScaledFp8 } from "../scaled-fp8";
import { blockOfModule, loraArchitecture } from "./describe";
import { targetResolver, type LoraTarget } from "./names";
import type { LoraFile, LoraModule } from "./read";
import type { TuckerOffsets } from "./tucker";

/** Above this share of a LoRA's modules matching nothing in the checkpoint, the LoRA does not fit it. */
export const UNMATCHED_LIMIT = 0.1;

export interface BakeLoraInput {
  lora: LoraFile;
  /** Ratio of the denoiser (UNet / transformer) modules. */
  ratio: number;
  /** Ratio of the text-encoder modules. */
  teRatio: number;
  /** Per-block multiplier of the ratio (LoRA block weights); undefined: 1 everywhere. */
  blockWeight?: (block: string) => number;
}

export interface Contribution {
  /** Index of the LoRA among the bake's LoRAs. */
  lora: number;
  module: LoraModule;
  target: LoraTarget;
  /** ratio · scale (· block weight), rounded to fp32: the weighted-sum parameter. */
  factor: number;
}

export interface LoraMatch {
  lora: LoraFile;
  architecture: ArchitectureId;
  modules: number;
  matched: number;
  /** Module names that target nothing in the checkpoint. */
  unmatched: string[];
}

export interface BakeMatch {
  /** Per checkpoint tensor name: the modules that update it, LoRAs in order. */
  contributions: Map<string, Contribution[]>;
  loras: LoraMatch[];
}

function fail(lora: LoraFile, module: LoraModule, tensor: string, message: string): MergeError {
  return new MergeError("SHAPE_MISMATCH", `${lora.path}: module ${module.name} → ${tensor}: ${message}`, { path: lora.path, tensor });
}

/**
 * Maps every LoRA's modules onto the checkpoint, before anything is written: refuses a LoRA for
 * another architecture (ARCHITECTURE_MISMATCH), a module whose shape does not fit its tensor
 * (SHAPE_MISMATCH), modules that cannot be baked (LORA_INVALID) and a LoRA of which more than
 * UNMATCHED_LIMIT of the modules match nothing (LORA_MISMATCH).
 */
export function matchLoras(base: ModelFile, arch: ArchitectureId, loras: BakeLoraInput[]): BakeMatch {
  const resolve = targetResolver(base, arch);
  const family = ARCHITECTURES[arch].family;
  const contributions = new Map<string, Contribution[]>();
  const matches: LoraMatch[] = [];
  loras.forEach((input, index) => {
    const { lora } = input;
    const loraArch = loraArchitecture(lora);
    if (loraArch !== "unknown" && ARCHITECTURES[loraArch].family !== family && family !== "unknown") {
      throw new MergeError("ARCHITECTURE_MISMATCH", `${lora.path} is a LoRA for ${ARCHITECTURES[loraArch].label}, the model ${base.path} is ${ARCHITECTURES[arch].label}`, { path: lora.path });
    }
    const unsupported = lora.modules.filter((m) => m.unsupported);
    if (unsupported.length) {
      throw new MergeError("LORA_INVALID", `${lora.path}: ${unsupported.length} module${unsupported.length === 1 ? "" : "s"} cannot be baked (${unsupported[0]!.name}: ${unsupported[0]!.unsupported})`, { path: lora.path, tensor: unsupported[0]!.name });
    }
    const unmatched: string[] = [];
    for (const m of lora.modules) {
      const target = resolve(m.name);
      if (!target) {
        unmatched.push(m.name);
        continue;
      }
      const t = target.tensor;
      if (!isMathDtype(t.dtype)) throw fail(lora, m, t.name, `the checkpoint tensor is ${t.dtype}, not a float type`);
      refuseScaledFp8(t.name, t.dtype, (k) => base.byName.has(k), base.path, "baking a LoRA into", undefined); // the bake does not go through fp8 scales
      const cols = numelOf(t.shape) / t.shape[0]!;
      if (m.rows !== target.rowCount || m.cols !== cols) {
        throw fail(lora, m, t.name, `ΔW is [${m.rows}, ${m.cols}]${m.kernel.length ? ` (kernel ${m.kernel.join("×")})` : ""}, the checkpoint ${target.rowCount !== t.shape[0] ? `slice is [${target.rowCount}, ${cols}] of ` : "tensor is "}${shapeToString(t.shape)}`);
      }
      const ratio = target.textEncoder ? input.teRatio : input.ratio;
      const weight = input.blockWeight ? input.blockWeight(blockOfModule(m, loraArch === "unknown" ? arch : loraArch)) : 1;
      const factor = Math.fround(ratio * m.scale * weight);
      if (factor === 0) continue; // nothing to add: the tensor stays as it is
      let list = contributions.get(t.name);
      if (!list) contributions.set(t.name, (list = []));
      list.push({ lora: index, module: m, target, factor });
    }
    const n = lora.modules.length;
    if (unmatched.length > n * UNMATCHED_LIMIT) {
      throw new MergeError(
        "LORA_MISMATCH",
        `${lora.path}: ${unmatched.length} of ${n} modules match no tensor of ${base.path} (${ARCHITECTURES[arch].label}), e.g. ${unmatched.slice(0, 3).join(", ")}: the LoRA does not fit this model`,
        { path: lora.path, tensor: unmatched[0]! },
      );
    }
    matches.push({ lora, architecture: loraArch, modules: n, matched: n - unmatched.length, unmatched });
  });
  return { contributions, loras: matches };
}

/** The side file of the Tucker modules' derived factors (lib/lora/tucker.ts), as job input `file`. */
export interface TuckerInput {
  file: number;
  offsets: Map<LoraModule, TuckerOffsets>;
}

const F32_ID = DTYPE_ID.F32;

/** A LoKr factor (full, or `_a`·`_b`, or a Tucker w2 materialised in the side file) as a Kronecker factor of the job. */
function kronFactorOf(m: LoraModule, file: number, which: "lokr_w1" | "lokr_w2", tucker: TuckerInput | undefined): KroneckerFactor {
  const ref = (t: NonNullable<LoraModule["factors"]["lokr_w1"]>) => ({ file, offset: t.offset, dtype: DTYPE_ID[t.dtype] });
  const derived = which === "lokr_w2" ? tucker?.offsets.get(m)?.lokrW2 : undefined;
  if (derived !== undefined) {
    const t = m.factors.lokr_t2!;
    const rows = m.factors.lokr_w2_a!.shape[1]!;
    return { rows, cols: m.factors.lokr_w2_b!.shape[1]! * t.shape[2]! * t.shape[3]!, full: { file: tucker!.file, offset: derived, dtype: F32_ID } };
  }
  const full = m.factors[which];
  if (full) return { rows: full.shape[0]!, cols: numelOf(full.shape) / full.shape[0]!, full: ref(full) };
  const a = m.factors[`${which}_a`]!, b = m.factors[`${which}_b`]!;
  return { rows: a.shape[0]!, cols: numelOf(b.shape) / b.shape[0]!, product: { rank: b.shape[0]!, up: ref(a), down: ref(b) } };
}

/** Rows [s, e) of a module's ΔW (s, e relative to the module's rows) as a low-rank (or, for LoKr, Kronecker) operand. */
function lowRankOf(m: LoraModule, file: number, s: number, e: number, tucker: TuckerInput | undefined): LowRankOperand | KroneckerOperand {
  const derived = tucker?.offsets.get(m);
  if (m.algorithm === "lokr") {
    const a = kronFactorOf(m, file, "lokr_w1", tucker), b = kronFactorOf(m, file, "lokr_w2", tucker);
    const w2 = m.factors.lokr_w2, t2 = m.factors.lokr_t2;
    const kernel = w2 && w2.shape.length === 4 ? w2.shape[2]! * w2.shape[3]! : t2 ? t2.shape[2]! * t2.shape[3]! : 1;
    return { kind: "kronecker", rows: e - s, cols: m.cols, kernel, rowStart: s, a, b };
  }
  const product = (upName: "up" | "hada_w1_a" | "hada_w2_a", downName: "down" | "hada_w1_b" | "hada_w2_b", rank: number): LowRankProduct => {
    const up = m.factors[upName]!, down = m.factors[downName]!;
    return {
      rank,
      up: { file, offset: up.offset + s * rank * DTYPE_SIZE[up.dtype], dtype: DTYPE_ID[up.dtype] },
      down: { file, offset: down.offset, dtype: DTYPE_ID[down.dtype] },
    };
  };
  // A Tucker LoHa product: U = w_aᵀ [rows, rank] and M [rank, cols], both fp32 in the side file.
  const reduced = (offsets: { up: number; down: number }, rank: number): LowRankProduct => ({
    rank,
    up: { file: tucker!.file, offset: offsets.up + s * rank * 4, dtype: F32_ID },
    down: { file: tucker!.file, offset: offsets.down, dtype: F32_ID },
  });
  if (m.algorithm === "loha") {
    const first = derived?.hada1 ? reduced(derived.hada1, m.factors.hada_t1!.shape[0]!) : product("hada_w1_a", "hada_w1_b", m.factors.hada_w1_b!.shape[0]!);
    const second = derived?.hada2 ? reduced(derived.hada2, m.factors.hada_t2!.shape[0]!) : product("hada_w2_a", "hada_w2_b", m.factors.hada_w2_b!.shape[0]!);
    return { kind: "lowrank", rows: e - s, cols: m.cols, ...first, hadamard: second };
  }
  if (m.algorithm === "tucker") {
    const up = m.factors.up!, r1 = m.factors.mid!.shape[0]!;
    return { kind: "lowrank", rows: e - s, cols: m.cols, rank: r1, up: { file, offset: up.offset + s * r1 * DTYPE_SIZE[up.dtype], dtype: DTYPE_ID[up.dtype] }, down: { file: tucker!.file, offset: derived!.down!, dtype: F32_ID } };
  }
  return { kind: "lowrank", rows: e - s, cols: m.cols, ...product("up", "down", m.rank) };
}

function remapped(a: Operand, shift: (file: number) => number): Operand {
  return a.kind === "input" ? { ...a, file: shift(a.file) } : a;
}

/**
 * The job pieces of a bake, from the pieces of the plain copy (no-interpolation) of the same
 * checkpoint: untouched tensors keep their piece (file indexes shifted past the LoRA files),
 * each updated tensor is cut at its contributions' row boundaries, each cut gets its chain.
 */
export function bakePieces(copyPieces: JobPiece[], contributions: Map<string, Contribution[]>, base: ModelFile, loraFile: (lora: number) => number, shift: (file: number) => number, tucker?: TuckerInput): JobPiece[] {
  const out: JobPiece[] = [];
  for (const piece of copyPieces) {
    const list = contributions.get(piece.name);
    if (!list) {
      out.push({ ...piece, ops: piece.ops.map((op) => ({ ...op, args: op.args.map((a) => remapped(a, shift)) })), writes: piece.writes.map((w) => ({ ...w, source: remapped(w.source, shift) })) });
      continue;
    }
    const tensor = base.byName.get(piece.name)!;
    const write = piece.writes[0]!;
    const src = write.source.kind === "op" ? piece.ops[write.source.index]!.args[0]! : write.source;
    if (piece.writes.length !== 1 || src.kind !== "input" || piece.n !== numelOf(tensor.shape)) {
      throw new MergeError("INTERNAL", `bake: unexpected copy piece for ${piece.name}`, { tensor: piece.name });
    }
    const inDtype = DTYPES[src.dtype]!, outDtype: Dtype = DTYPES[write.dtype]!;
    const round = DTYPE_ID[isNarrowFloat(outDtype) ? outDtype : "F32"];
    const rows = tensor.shape[0]!, cols = piece.n / rows;
    const cuts = new Set([0, rows]);
    for (const c of list) {
      cuts.add(c.target.rowStart);
      cuts.add(c.target.rowStart + c.target.rowCount);
    }
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const s = points[i]!, e = points[i + 1]!;
      const input: Operand = { kind: "input", file: shift(src.file), offset: src.offset + s * cols * DTYPE_SIZE[inDtype], dtype: src.dtype };
      const covering = list.filter((c) => c.target.rowStart <= s && e <= c.target.rowStart + c.target.rowCount);
      const ops: JobOp[] = [];
      let source: Operand = input;
      if (covering.length === 0) {
        if (inDtype !== outDtype) ops.push({ kernel: KERNEL_ID.copy, args: [input], params: [], round });
      } else {
        covering.forEach((c, k) => {
          const delta = lowRankOf(c.module, loraFile(c.lora), s - c.target.rowStart, e - c.target.rowStart, tucker);
          ops.push({ kernel: KERNEL_ID["weighted-sum"], args: [source, delta], params: [1, c.factor], round: k === covering.length - 1 ? round : DTYPE_ID.F32 });
          source = { kind: "op", index: k };
        });
      }
      if (ops.length) source = { kind: "op", index: ops.length - 1 };
      out.push({ name: piece.name, n: (e - s) * cols, ops, writes: [{ ...write, offset: write.offset + s * cols * DTYPE_SIZE[outDtype], source }] });
    }
  }
  return out;
}
