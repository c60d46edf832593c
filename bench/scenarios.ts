/** The benchmark scenarios of issue 3, as data. */
import type { MethodName } from "../lib/methods/registry";
import type { ModelSpec } from "./models";

export interface Scenario {
  id: string;
  title: string;
  method: MethodName;
  /** A, B, C in order (as many as the method takes); for a base + models method, the base then the models. */
  models: ModelSpec[];
  dtype: "fp16" | "fp32" | "bf16" | "same";
  multiplier?: number;
  /** The method's second parameter β, where it has one. */
  beta?: number;
  /** Named parameters (density, drop-rate, seed…) of the many-model methods. */
  params?: Record<string, number>;
  /** Also run the TS engine on this scenario. */
  js: boolean;
}

const sd15 = (seed: number): ModelSpec => ({ layout: "sd15", seed });
const sdxl = (seed: number): ModelSpec => ({ layout: "sdxl", seed });
const sd21 = (seed: number): ModelSpec => ({ layout: "sd21", seed });
const sd15h = (seed: number): ModelSpec => ({ layout: "sd15_fp16_pruned", seed });
const flux8 = (seed: number): ModelSpec => ({ layout: "flux1_dev_comfy_fp8", seed });

export const SCENARIOS: Scenario[] = [
  { id: "ws-sd15", title: "weighted sum, 2 × SD 1.5 fp32 → fp16", method: "weighted-sum", models: [sd15(1), sd15(2)], dtype: "fp16", multiplier: 0.3, js: true },
  { id: "ad-sd15", title: "add difference, 3 × SD 1.5 fp32 → fp32", method: "add-difference", models: [sd15(1), sd15(2), sd15(3)], dtype: "fp32", multiplier: 0.3, js: true },
  { id: "noint-sd15", title: "no interpolation, SD 1.5 fp32 → fp16", method: "no-interpolation", models: [sd15(1)], dtype: "fp16", js: false },
  { id: "ad-sdxl", title: "add difference, 3 × SDXL fp16 → fp16", method: "add-difference", models: [sdxl(1), sdxl(2), sdxl(3)], dtype: "fp16", multiplier: 0.3, js: false },
  // The element-wise methods of issue 10 (scalar C++ kernels, native/core/method_kernels.cc).
  { id: "td-sd15", title: "train difference, 3 × SD 1.5 fp32 → fp16", method: "train-difference", models: [sd15(1), sd15(2), sd15(3)], dtype: "fp16", multiplier: 1, js: true },
  { id: "md-sd15", title: "multiply difference, 3 × SD 1.5 fp32 → fp16", method: "multiply-difference", models: [sd15(1), sd15(2), sd15(3)], dtype: "fp16", multiplier: 0.3, beta: 0.5, js: true },
  // Not in the default set: other layouts, for spot checks.
  { id: "ws-sd21", title: "weighted sum, 2 × SD 2.1 fp32 → fp16", method: "weighted-sum", models: [sd21(1), sd21(2)], dtype: "fp16", multiplier: 0.3, js: false },
  { id: "ws-sd15h", title: "weighted sum, 2 × SD 1.5 pruned fp16 → fp16", method: "weighted-sum", models: [sd15h(1), sd15h(2)], dtype: "fp16", multiplier: 0.3, js: false },
  // Issue 11: many models and per-tensor statistics (a statistics pass before each tensor's writes).
  { id: "ties-sd15h", title: "TIES, base + 3 × SD 1.5 fp16 → fp16", method: "ties", models: [sd15h(1), sd15h(2), sd15h(3), sd15h(4)], dtype: "fp16", multiplier: 1, params: { density: 0.2 }, js: false },
  { id: "dare-ties-sdxl", title: "DARE-TIES, base + 2 × SDXL fp16 → fp16", method: "dare-ties", models: [sdxl(1), sdxl(2), sdxl(3)], dtype: "fp16", multiplier: 1, params: { "drop-rate": 0.9, seed: 42 }, js: false },
  { id: "slerp-sd15", title: "SLERP, 2 × SD 1.5 fp32 → fp16", method: "slerp", models: [sd15(1), sd15(2)], dtype: "fp16", multiplier: 0.4, js: false },
  // FLUX.1 dev in ComfyUI's fp8 layout: 2 × 11.9 GB in, 11.9 GB out (fp8 kept: --dtype same).
  { id: "ws-flux-fp8", title: "weighted sum, 2 × FLUX.1 dev fp8 e4m3 → fp8", method: "weighted-sum", models: [flux8(1), flux8(2)], dtype: "same", multiplier: 0.4, js: true },
];

export const DEFAULT_SCENARIOS = ["ws-sd15", "ad-sd15", "noint-sd15", "ad-sdxl"];

export function scenarioById(id: string): Scenario {
  const s = SCENARIOS.find((x) => x.id === id);
  if (!s) throw new Error(`unknown scenario "${id}" (known: ${SCENARIOS.map((x) => x.id).join(", ")})`);
  return s;
}
