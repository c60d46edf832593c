/**
 * A merge method is data: its name (the same string in the CLI, recipes, docs and tests), the
 * models it needs, its formula, and how it maps onto one of the native kernels. The registry
 * drives validation, `--help` text and kernel selection.
 */
import type { KernelName } from "../native/job";

export type ModelSlot = "a" | "b" | "c";

export interface KernelCall {
  kernel: KernelName;
  /** The models the kernel reads, in argument order. */
  args: ModelSlot[];
  /** Kernel parameters (rounded to fp32 by the planner). */
  params: number[];
}

export interface MergeMethod {
  name: string;
  summary: string;
  /** The formula as users know it, for help text and docs. */
  formula: string;
  /** Models the method reads; "a" is always first. */
  inputs: readonly ModelSlot[];
  /** Whether the multiplier M matters. */
  usesMultiplier: boolean;
  /** Accepted multipliers (extrapolation beyond [0, 1] is a known technique for some methods). */
  multiplierRange: readonly [number, number];
  /** Maps a multiplier M onto a kernel call. */
  kernelFor(multiplier: number): KernelCall;
}

export function defineMethod(method: MergeMethod): MergeMethod {
  return method;
}
