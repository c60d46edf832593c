/**
 * A merge method is data: its name (the same string in the CLI, recipes, docs and tests), the
 * models it needs, its formula, its parameters, and how it maps onto the engines' kernels. The
 * registry drives validation, `--help` text and kernel selection.
 *
 * Parameters: every method's first parameter is α (`--multiplier`, alias `--alpha`), the second
 * β (`--beta`); later ones go by their names. The planner resolves each parameter for each
 * tensor (lib/methods/params.ts: per-key patterns, blocks, the row's value) and calls
 * `kernelFor` with that tensor's values, so nothing downstream assumes one value per model.
 */
import type { KernelName, ReductionName } from "../native/job";

export type ModelSlot = "a" | "b" | "c";

/**
 * A model a kernel reads: a classic slot, or, for methods over a base and a list of models
 * (`MethodDefinition.many`), "base" or the model's index in the row's list (0-based).
 */
export type ArgRef = ModelSlot | "base" | number;

/** What a statistic reads: a model, or the task vector `minus[0] − minus[1]` (fp32, elementwise). */
export type StatOperand = ArgRef | { minus: readonly [ArgRef, ArgRef] };

/** A per-tensor statistic (a piece reduction, lib/native/job.ts), handed to the kernel in order. */
export interface StatSpec {
  kind: ReductionName;
  args: StatOperand[];
  /** kth-magnitude: 0 ≤ k ≤ the tensor's element count. */
  k?: number;
  /** sum-squares / dot per column of dim 0 (columns = n / shape[0]); see JobReduction.columns. */
  columns?: number;
}

export interface KernelCall {
  kernel: KernelName;
  /** The models the kernel reads, in argument order. */
  args: ArgRef[];
  /** Kernel parameters (rounded to fp32 by the planner). */
  params: number[];
  /** Statistics over the whole tensor the kernel reads (JobOp.stats); the tensor is then one piece. */
  stats?: StatSpec[];
  /** Integer parameters (JobOp.ints, u32). */
  ints?: number[];
  /** The kernel's random masks are keyed to element indices (the planner sets JobOp.elementStart). */
  keyed?: boolean;
}

/** What `kernelFor` knows of the tensor besides its parameter values. */
export interface TensorContext {
  /** The key. */
  name: string;
  /** FNV-1a 32-bit hash of the key's UTF-8 bytes (mask keys: same-shaped tensors differ). */
  nameHash: number;
  /** Element count. */
  n: number;
  /** The tensor's shape. */
  shape?: readonly number[];
  /** Many-model methods: each model's parameter values (`params` order), its own overrides first. */
  models?: readonly (readonly number[])[];
}

/** Inputs of a method over a base and a list of models (TIES, DARE, model stock…). */
export interface ManyInputs {
  /** Whether the base is required (every task-vector method needs it). */
  base: true;
  /** Models in the list, besides the base. */
  min: number;
  max: number;
}

export interface MethodParam {
  /** "alpha" for the first parameter, "beta" for the second; later ones by their own names. */
  name: string;
  summary: string;
  default: number;
  /** Accepted values (extrapolation beyond [0, 1] is a known technique for some methods). */
  range: readonly [number, number];
  /** Many-model methods: the value may differ per model (mergekit's per-model weight, density). */
  perModel?: boolean;
  /** Only whole numbers (a seed, a 0/1 switch). */
  integer?: boolean;
}

/** Rows [from, to) along dim 0 computed by another call than the tensor's (tensor-sum). */
export interface RowSpan {
  from: number;
  to: number;
  call: KernelCall;
}

export interface MethodDefinition {
  name: string;
  summary: string;
  /** The formula as users know it, for help text and docs. */
  formula: string;
  /** Where the formula comes from (README "Merge methods"). */
  source?: string;
  /** Models the method reads; "a" is always first. Empty for a `many` method. */
  inputs: readonly ModelSlot[];
  /** A method over a base and a list of models (BoardRow.base / BoardRow.models) instead of slots. */
  many?: ManyInputs;
  /** Parameters in order: α, β, then named ones. Empty for a method without any. */
  params: readonly MethodParam[];
  /** One tensor's kernel call, from its parameter values (in `params` order). */
  kernelFor(values: readonly number[], tensor?: TensorContext): KernelCall;
  /**
   * Methods that take whole rows from one model or the other: for a tensor of `rows` rows
   * along dim 0, the spans whose call differs from `kernelFor` (0-dim tensors keep `kernelFor`).
   */
  rowSpans?(values: readonly number[], rows: number): RowSpan[];
  /** Whether `clamp` (to [min(A,B), max(A,B)]) may follow the method (needs A and B). */
  clampable?: boolean;
}

export interface MergeMethod extends MethodDefinition {
  /** Whether α matters (a method without parameters cannot sweep). */
  usesMultiplier: boolean;
  /** α's accepted values. */
  multiplierRange: readonly [number, number];
  /** Default values, in `params` order. */
  defaults: readonly number[];
}

export function defineMethod(method: MethodDefinition): MergeMethod {
  const names = method.params.map((p) => p.name);
  if (names.length > 0 && names[0] !== "alpha") throw new Error(`${method.name}: the first parameter must be alpha`);
  // A classic method's second parameter is β (`--beta`); many-model methods name theirs.
  if (!method.many && names.length > 1 && names[1] !== "beta") throw new Error(`${method.name}: the second parameter must be beta`);
  if (method.many && method.inputs.length > 0) throw new Error(`${method.name}: a base + models method has no A/B/C slots`);
  if (new Set(names).size !== names.length) throw new Error(`${method.name}: duplicate parameter`);
  return {
    clampable: method.inputs.includes("b"),
    ...method,
    usesMultiplier: method.params.length > 0,
    multiplierRange: method.params[0]?.range ?? [0, 1],
    defaults: method.params.map((p) => p.default),
  };
}

/** α with a method's own summary, default and range. */
export function alphaParam(summary: string, range: readonly [number, number], def = 0.5): MethodParam {
  return { name: "alpha", summary, default: def, range };
}

export function betaParam(summary: string, range: readonly [number, number], def = 0.5): MethodParam {
  return { name: "beta", summary, default: def, range };
}
