/**
 * From a pass's row results to the job pieces both engines run (lib/plan.ts): each key cut
 * where any output's segments change (whole, when an expression needs per-tensor statistics),
 * its expressions flattened into ops with common subexpressions shared.
 */
import { DTYPE_ID, DTYPE_SIZE } from "./dtypes";
import { numelOf, type ModelFile } from "./model";
import { KERNEL_ID, REDUCTION_ID, type JobOp, type JobPiece, type JobReduction, type Operand } from "./native/job";
import type { PlannedOutput } from "./plan";
import { exprAt, exprHasStats, segmentsOf, type Expr, type RowResult, type StatExpr } from "./plan-expr";


/** Short keys for parameter lists (a sweep shares one list per multiplier across every key). */
const paramKeys = new WeakMap<number[], string>();
function paramsKey(params: number[]): string {
  let key = paramKeys.get(params);
  if (key === undefined) paramKeys.set(params, (key = params.join(",")));
  return key;
}

/** Flattens the expressions of one piece into job ops, sharing common subexpressions and operands. */
class PieceBuilder {
  readonly ops: JobOp[] = [];
  readonly reductions: JobReduction[] = [];
  private readonly reductionKeys = new Map<string, number>();
  private readonly keys = new Map<string, Operand>();
  /** The same expression object (a file read, an earlier row's result) seen again in this piece. */
  private readonly seen = new Map<Expr, { operand: Operand; key: string }>();
  constructor(private readonly fileIndex: (m: ModelFile) => number) {}

  /** The operand reading `expr` from element 0 of the piece. */
  operand(expr: Expr): { operand: Operand; key: string } {
    let found = this.seen.get(expr);
    if (!found) {
      found = this.build(expr);
      this.seen.set(expr, found);
    }
    return found;
  }

  private build(expr: Expr): { operand: Operand; key: string } {
    if (expr.kind === "file") {
      const file = this.fileIndex(expr.model);
      const offset = expr.tensor.offset + expr.base * DTYPE_SIZE[expr.tensor.dtype];
      const key = `f${file}@${offset}`;
      let operand = this.keys.get(key);
      if (!operand) this.keys.set(key, (operand = { kind: "input", file, offset, dtype: DTYPE_ID[expr.tensor.dtype] }));
      return { operand, key };
    }
    const args = expr.args.map((a) => this.operand(a));
    const stats = expr.stats?.map((st) => this.reduction(st));
    const extra = `${stats ? `;s${stats.join(",")}` : ""}${expr.ints ? `;i${expr.ints.join(",")}` : ""}${expr.elementStart !== undefined ? `;e${expr.elementStart}` : ""}`;
    const key = `${expr.kernel}(${args.map((a) => a.key).join(",")};${paramsKey(expr.params)};${expr.round}${extra})`;
    let operand = this.keys.get(key);
    if (!operand) {
      this.ops.push({
        kernel: KERNEL_ID[expr.kernel], args: args.map((a) => a.operand), params: expr.params, round: DTYPE_ID[expr.round],
        ...(stats ? { stats } : {}), ...(expr.ints ? { ints: expr.ints } : {}), ...(expr.elementStart ? { elementStart: expr.elementStart } : {}),
      });
      operand = { kind: "op", index: this.ops.length - 1 };
      this.keys.set(key, operand);
    }
    return { operand, key };
  }

  /** The index of a reduction of the piece, shared when two ops ask for the same one. */
  private reduction(st: StatExpr): number {
    const args = st.args.map((a) => this.operand(a));
    const key = `${st.kind}(${args.map((a) => a.key).join(",")};${st.k ?? ""};${st.columns ?? ""})`;
    let index = this.reductionKeys.get(key);
    if (index === undefined) {
      this.reductions.push({ kind: REDUCTION_ID[st.kind], args: args.map((a) => a.operand), ...(st.k !== undefined ? { k: st.k } : {}), ...(st.columns ? { columns: st.columns } : {}) });
      this.reductionKeys.set(key, (index = this.reductions.length - 1));
    }
    return index;
  }
}

/** A saved output of the plan, with the row result it is written from. */
export interface SavedOutput {
  output: PlannedOutput;
  result: RowResult;
  k: number;
}

/** Builds the job pieces of a pass: for each key, one write per output of the pass. */
export function buildPieces(saved: SavedOutput[], fileIndex: (m: ModelFile) => number): JobPiece[] {
  const pieces: JobPiece[] = [];
  saved[0]!.result.tensors.forEach((first, j) => {
    const all = saved.map((s, o) => ({ o, tensor: s.result.tensors[j]!, segments: segmentsOf(s.result.tensors[j]!, s.k) }));
    // Outputs whose tensor needs per-tensor statistics share one piece over the whole tensor
    // (its reductions see every element); the others are cut as usual.
    const whole = all.filter((t) => t.segments.some((g) => exprHasStats(g.expr)));
    if (whole.length > 0) {
      const n = numelOf(first.shape);
      const builder = new PieceBuilder(fileIndex);
      const writes = whole.map((t) => ({ output: t.o, offset: saved[t.o]!.output.layout.offsets[j]!, dtype: DTYPE_ID[t.tensor.dtype], source: builder.operand(exprAt(t.segments, 0, n)).operand }));
      pieces.push({ name: first.name, n, ops: builder.ops, writes, ...(builder.reductions.length ? { reductions: builder.reductions } : {}) });
    }
    const perOutput = whole.length > 0 ? all.filter((t) => !whole.includes(t)) : all;
    if (perOutput.length === 0) return;
    const cuts = new Set<number>([0, numelOf(first.shape)]);
    for (const t of perOutput) for (const g of t.segments) cuts.add(g.start);
    const points = [...cuts].sort((p, q) => p - q);
    for (let i = 0; i + 1 < points.length; i++) {
      const start = points[i]!, count = points[i + 1]! - start;
      const builder = new PieceBuilder(fileIndex);
      const writes = perOutput.map((t) => {
        const size = DTYPE_SIZE[t.tensor.dtype];
        const { operand } = builder.operand(exprAt(t.segments, start, count));
        return { output: t.o, offset: saved[t.o]!.output.layout.offsets[j]! + start * size, dtype: DTYPE_ID[t.tensor.dtype], source: operand };
      });
      pieces.push({ name: first.name, n: count, ops: builder.ops, writes });
    }
  });
  return pieces;
}
