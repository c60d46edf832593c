/**
 * mergekit configurations (arcee-ai/mergekit `mergekit/config.py`, `MergeConfiguration`): the
 * YAML parsed with the `yaml` package (YAML 1.2, duplicate keys refused), then validated field by
 * field. Anything tensormerge does not do is refused naming the field, never ignored.
 *
 * Parameter values (`ParameterSetting`) are, as in mergekit's `evaluate_setting`:
 * - a scalar (number, or boolean for flags such as `normalize`);
 * - a gradient: a list of numbers interpolated over the layers of a slice (`evaluateSetting`);
 * - a list of `{ filter, value }`: the first whose filter is absent, "*", or a substring of the
 *   tensor name gives the value (itself a scalar or a gradient).
 * Lists of strings (mergekit picks one by position) are refused: no tensormerge parameter is a string.
 */
import { dirname, isAbsolute, resolve } from "node:path";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { MergeError } from "../errors";

export const MERGEKIT_METHODS = ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "model_stock", "passthrough"] as const;
export type MergekitMethod = (typeof MERGEKIT_METHODS)[number];

export type Scalar = number | boolean;
export type Gradient = number[];
export interface Conditional {
  filter?: string;
  value: Scalar | Gradient;
}
export type Setting = Scalar | Gradient | Conditional[];

export interface SliceSource {
  /** Resolved path of the model folder. */
  model: string;
  /** As written in the YAML, for messages and the model card. */
  ref: string;
  /** Half-open [start, end). */
  layerRange?: [number, number];
  parameters: Record<string, Setting>;
}

export interface OutputSlice {
  sources: SliceSource[];
  parameters: Record<string, Setting>;
}

export interface MergekitConfig {
  method: MergekitMethod;
  baseModel?: { model: string; ref: string };
  /** `models:` form (one slice over every layer, built once the models are opened). */
  models?: SliceSource[];
  slices?: OutputSlice[];
  parameters: Record<string, Setting>;
  /** mergekit's compute dtype; here the output dtype when `out_dtype` is absent (we compute in fp32). */
  dtype?: "fp16" | "bf16" | "fp32";
  outDtype?: "fp16" | "bf16" | "fp32";
  /** "base" or a model's path. */
  tokenizerSource?: string;
  /** The YAML as given, for the model card and the shards' metadata. */
  text: string;
}

/** Parameters each method reads: per model ("tensor parameters") and global, as mergekit declares them. */
export const METHOD_PARAMETERS: Record<MergekitMethod, { perModel: readonly string[]; global: readonly string[] }> = {
  linear: { perModel: ["weight"], global: ["normalize"] },
  task_arithmetic: { perModel: ["weight", "density"], global: ["normalize", "int8_mask", "rescale"] },
  ties: { perModel: ["weight", "density"], global: ["normalize", "int8_mask", "rescale"] },
  dare_ties: { perModel: ["weight", "density"], global: ["normalize", "int8_mask", "rescale"] },
  dare_linear: { perModel: ["weight", "density"], global: ["normalize", "int8_mask", "rescale"] },
  slerp: { perModel: [], global: ["t"] },
  model_stock: { perModel: [], global: ["filter_wise"] },
  passthrough: { perModel: ["scale"], global: [] },
};

const TOP_LEVEL = ["merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source"];
/** mergekit fields tensormerge refuses, with why. */
const REFUSED: Record<string, string> = {
  modules: "multi-module merges (modules) are not supported",
  tokenizer: "tokenizer building (tokenizer:) is not supported: no tokenizer union or added tokens",
  chat_template: "chat_template is not supported: copy the template into tokenizer_config.json yourself",
  residual_weight: "residual_weight is not supported",
};
const DTYPES: Record<string, "fp16" | "bf16" | "fp32"> = { float16: "fp16", fp16: "fp16", half: "fp16", bfloat16: "bf16", bf16: "bf16", float32: "fp32", fp32: "fp32", float: "fp32" };

export function configError(field: string, message: string): MergeError {
  return new MergeError("RECIPE_INVALID", `mergekit config: ${field}: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function checkKeys(field: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (allowed.includes(key)) continue;
    const prefix = field ? `${field}.` : "";
    if (REFUSED[key]) throw configError(`${prefix}${key}`, REFUSED[key]!);
    throw configError(`${prefix}${key}`, `unknown or unsupported field (supported here: ${allowed.join(", ")})`);
  }
}

function finite(field: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw configError(field, `must be a finite number, got ${JSON.stringify(v)}`);
  return v;
}

function parseValue(field: string, v: unknown): Scalar | Gradient {
  if (typeof v === "boolean") return v;
  if (typeof v === "number") return finite(field, v);
  if (Array.isArray(v)) {
    if (v.length === 0) throw configError(field, "a gradient needs at least one value");
    if (v.some((e) => typeof e === "string")) throw configError(field, "lists of strings are not supported (no tensormerge parameter takes a string)");
    return v.map((e, i) => finite(`${field}[${i}]`, e));
  }
  throw configError(field, `must be a number, a boolean or a list of numbers (a gradient), got ${JSON.stringify(v)}`);
}

export function parseSetting(field: string, v: unknown): Setting {
  if (Array.isArray(v) && v.length > 0 && v.every(isObject)) {
    return v.map((c, i) => {
      const f = `${field}[${i}]`;
      checkKeys(f, c, ["filter", "value"]);
      if (!Object.hasOwn(c, "value")) throw configError(`${f}.value`, "is required");
      if (c.filter !== undefined && c.filter !== null && typeof c.filter !== "string") throw configError(`${f}.filter`, "must be a string (a substring of tensor names)");
      return { ...(typeof c.filter === "string" ? { filter: c.filter } : {}), value: parseValue(`${f}.value`, c.value) };
    });
  }
  if (isObject(v)) throw configError(field, "must be a value, a gradient or a list of { filter, value }");
  return parseValue(field, v);
}

function parseParameters(field: string, v: unknown, allowed: readonly string[], method: string): Record<string, Setting> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw configError(field, "must be a mapping of parameter names to values");
  const out: Record<string, Setting> = {};
  for (const [name, value] of Object.entries(v)) {
    if (!allowed.includes(name)) throw configError(`${field}.${name}`, `${method} has no such parameter here${allowed.length ? ` (it reads ${allowed.join(", ")})` : ""}`);
    out[name] = parseSetting(`${field}.${name}`, value);
  }
  return out;
}

/** A model reference: a local folder, resolved against the working directory as mergekit does, then the config's folder. */
/** Finds a model a config names when neither the working directory nor the config's folder has it (reproduce searches the model folders). */
export type ModelLocator = (ref: string) => string | undefined;

function parseModelRef(field: string, v: unknown, configDir: string, exists: (p: string) => boolean, locate?: ModelLocator): { model: string; ref: string } {
  if (typeof v !== "string" || v.trim() === "") throw configError(field, `must be a model folder path, got ${JSON.stringify(v)}`);
  if (v.includes("+")) throw configError(field, `"${v}": model+LoRA references are not supported`);
  const candidates = isAbsolute(v) ? [v] : [resolve(v), resolve(configDir, v)];
  const found = candidates.find(exists) ?? locate?.(v);
  if (!found) throw configError(field, `"${v}" is not a local folder (tensormerge reads local Hugging Face folders; download the repository first)`);
  return { model: found, ref: v };
}

function parseLayerRange(field: string, v: unknown): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) throw configError(field, `must be [start, end], two whole numbers ≥ 0, got ${JSON.stringify(v)}`);
  const [a, b] = v as [number, number];
  if (b <= a) throw configError(field, `[${a}, ${b}] is empty: the range is half-open, end must be greater than start`);
  return [a, b];
}

function parseDtype(field: string, v: unknown): "fp16" | "bf16" | "fp32" | undefined {
  if (v === undefined || v === null) return undefined;
  const d = typeof v === "string" ? DTYPES[v] : undefined;
  if (!d) throw configError(field, `${JSON.stringify(v)} is not supported (float16, bfloat16 or float32)`);
  return d;
}

/**
 * Parses and validates a mergekit YAML. `exists(path)` tells whether a model folder exists.
 *
 * @example
 * parseMergekitConfig("merge_method: linear\nmodels:\n  - model: ./a\n    parameters: {weight: 1}\n", "/x/c.yml", fs.existsSync);
 */
export function parseMergekitConfig(text: string, configPath: string, exists: (p: string) => boolean, locate?: ModelLocator): MergekitConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true, prettyErrors: true, maxAliasCount: 100 });
  } catch (e) {
    const detail = e instanceof YAMLParseError ? e.message.split("\n")[0] : (e as Error).message;
    throw new MergeError("RECIPE_INVALID", `${configPath}: not valid YAML (${detail})`, { path: configPath });
  }
  if (!isObject(doc)) throw configError("(top level)", "must be a mapping (merge_method, models or slices, …)");
  checkKeys("", doc, TOP_LEVEL);
  const methodName = doc.merge_method;
  if (typeof methodName !== "string") throw configError("merge_method", "is required");
  if (!(MERGEKIT_METHODS as readonly string[]).includes(methodName)) throw configError("merge_method", `"${methodName}" is not supported (supported: ${MERGEKIT_METHODS.join(", ")})`);
  const method = methodName as MergekitMethod;
  const { perModel, global } = METHOD_PARAMETERS[method];
  const configDir = dirname(resolve(configPath));
  const ref = (field: string, v: unknown) => parseModelRef(field, v, configDir, exists, locate);
  if ((doc.models === undefined) === (doc.slices === undefined)) throw configError("models / slices", "give exactly one of models and slices");
  const config: MergekitConfig = { method, parameters: parseParameters("parameters", doc.parameters, global, method), text };
  if (doc.base_model !== undefined && doc.base_model !== null) config.baseModel = ref("base_model", doc.base_model);
  if (doc.models !== undefined) {
    if (!Array.isArray(doc.models) || doc.models.length === 0) throw configError("models", "must be a non-empty list");
    config.models = doc.models.map((m, i) => {
      const f = `models[${i}]`;
      if (!isObject(m)) throw configError(f, "must be { model, parameters }");
      checkKeys(f, m, ["model", "parameters"]);
      return { ...ref(`${f}.model`, m.model), parameters: parseParameters(`${f}.parameters`, m.parameters, perModel, method) };
    });
  } else {
    if (!Array.isArray(doc.slices) || doc.slices.length === 0) throw configError("slices", "must be a non-empty list");
    config.slices = doc.slices.map((s, i) => {
      const f = `slices[${i}]`;
      if (!isObject(s)) throw configError(f, "must be { sources, parameters }");
      checkKeys(f, s, ["sources", "parameters"]);
      if (!Array.isArray(s.sources) || s.sources.length === 0) throw configError(`${f}.sources`, "must be a non-empty list");
      const sources = s.sources.map((src, j) => {
        const g = `${f}.sources[${j}]`;
        if (!isObject(src)) throw configError(g, "must be { model, layer_range, parameters }");
        checkKeys(g, src, ["model", "layer_range", "parameters"]);
        if (src.layer_range === undefined) throw configError(`${g}.layer_range`, "is required");
        return { ...ref(`${g}.model`, src.model), layerRange: parseLayerRange(`${g}.layer_range`, src.layer_range), parameters: parseParameters(`${g}.parameters`, src.parameters, perModel, method) };
      });
      const lengths = sources.map((x) => x.layerRange[1] - x.layerRange[0]);
      if (lengths.some((n) => n !== lengths[0])) throw configError(`${f}.sources`, `every source of a slice must have the same number of layers (got ${lengths.join(", ")})`);
      return { sources, parameters: parseParameters(`${f}.parameters`, s.parameters, [...perModel, ...global], method) };
    });
  }
  const dtype = parseDtype("dtype", doc.dtype);
  const outDtype = parseDtype("out_dtype", doc.out_dtype);
  if (dtype) config.dtype = dtype;
  if (outDtype) config.outDtype = outDtype;
  if (doc.tokenizer_source !== undefined && doc.tokenizer_source !== null) {
    if (doc.tokenizer_source === "union") throw configError("tokenizer_source", "union is not supported (no tokenizer union: every model must have the same vocabulary)");
    config.tokenizerSource = doc.tokenizer_source === "base" ? "base" : ref("tokenizer_source", doc.tokenizer_source).model;
  }
  return config;
}

/**
 * mergekit's `evaluate_setting`: a scalar as it is; a gradient of n values at position t ∈ [0, 1]
 * interpolated linearly between the two nearest values (scaled = t·(n−1), i0 = ⌊scaled⌋,
 * i1 = min(n−1, i0+1), frac = scaled − i0, value = (1−frac)·v[i0] + frac·v[i1]); a list of
 * conditions: the first whose filter is absent, "*" or a substring of `tensorName`.
 * Undefined when no condition matches.
 */
export function evaluateSetting(tensorName: string, setting: Setting, t: number): Scalar | undefined {
  if (typeof setting === "number" || typeof setting === "boolean") return setting;
  if (setting.length > 0 && typeof setting[0] === "number") {
    const values = setting as number[];
    const scaled = t * (values.length - 1);
    const i0 = Math.trunc(scaled);
    const i1 = Math.min(values.length - 1, i0 + 1);
    const frac = scaled - i0;
    return (1 - frac) * values[i0]! + frac * values[i1]!;
  }
  for (const c of setting as Conditional[]) {
    if (c.filter === undefined || c.filter === "*" || (tensorName !== "" && tensorName.includes(c.filter))) return evaluateSetting(tensorName, c.value, t);
  }
  return undefined;
}
