/**
 * How often a plan reads each input byte: the counter behind "each input is read once per run".
 * It walks the job the engines execute: every input operand of every piece is a byte range of an
 * input file. Within a piece an operand shared by several outputs or rows is one operand (the
 * planner shares common subexpressions); across pieces, a range read twice would show up here as
 * overlapping bytes, and a file used by two passes as `passes: 2`.
 */
import { DTYPES, DTYPE_SIZE } from "../dtypes";
import type { BoardPlan } from "../plan";

export interface InputReadReport {
  path: string;
  size: number;
  /** Passes whose job reads this file (a pass maps each of its inputs once). */
  passes: number;
  /** Distinct operand ranges. */
  ranges: number;
  /** Bytes covered by at least one range. */
  bytesRead: number;
  /** Bytes covered by more than one range (0 when every byte is read at most once). */
  bytesReadTwice: number;
}

/**
 * @example
 * inputReadReport(plan).every((r) => r.passes === 1 && r.bytesReadTwice === 0); // true
 */
export function inputReadReport(plan: BoardPlan): InputReadReport[] {
  const ranges = plan.inputs.map(() => [] as [number, number][]);
  const passes = plan.inputs.map(() => 0);
  for (const pass of plan.passes) {
    const used = new Set<number>();
    for (const piece of pass.pieces) {
      const seen = new Set<string>();
      const visit = (o: { kind: string; file?: number; offset?: number; dtype?: number }) => {
        if (o.kind !== "input" || o.file! >= plan.inputs.length) return; // a side input (contiguous copies of a .ckpt's strided tensors)
        const key = `${o.file}:${o.offset}`;
        if (seen.has(key)) return;
        seen.add(key);
        used.add(o.file!);
        ranges[o.file!]!.push([o.offset!, o.offset! + piece.n * DTYPE_SIZE[DTYPES[o.dtype!]!]]);
      };
      for (const op of piece.ops) op.args.forEach(visit);
      for (const w of piece.writes) visit(w.source);
    }
    for (const f of used) passes[f]!++;
  }
  return plan.inputs.map((m, i) => {
    const list = ranges[i]!.sort((x, y) => x[0] - y[0]);
    let covered = 0, twice = 0, end = -1;
    for (const [s, e] of list) {
      if (s >= end) {
        covered += e - s;
        end = e;
      } else {
        twice += Math.min(e, end) - s;
        if (e > end) {
          covered += e - end;
          end = e;
        }
      }
    }
    return { path: m.path, size: m.size, passes: passes[i]!, ranges: list.length, bytesRead: covered, bytesReadTwice: twice };
  });
}
