/**
 * The output model's tensors for a mergekit configuration, as mergekit's `MergePlanner`
 * (`mergekit/plan.py`) lays them out: the `models:` form is one slice over every layer; the
 * output's layers are the slices' layers in order, renumbered from 0 (a passthrough of slices
 * builds a deeper model); within a slice of n layers, layer i has t = i/(n−1) (t = 1 for a
 * one-layer slice) for gradients; the embedding (`model.embed_tokens.*`, mergekit's "pre
 * weights") comes from the first slice's sources at t = 0, every other non-layer tensor (final
 * norm, `lm_head`: "post weights") from the last slice's at t = 1.
 *
 * For each source position j (the j-th source of every slice) the result is one logical model
 * (a ModelFile with `parts`), whose tensors have the output's names and are read in place from
 * the sources' shard files: merging position 0 with position 1 … is then an ordinary board row.
 */
import type { ModelFile, TensorInfo } from "../model";
import { LAYER_KEY } from "./architecture";
import { combineParts, type HfModel } from "./folder";
import { configError, type OutputSlice } from "./mergekit-config";

/** Where an output tensor comes from: its slice, its t, and its input name at each position. */
export interface TensorContext {
  slice: number;
  t: number;
  inputNames: (string | undefined)[];
}

export interface AlignedModels {
  /** One logical model per source position. */
  positions: ModelFile[];
  context: Map<string, TensorContext>;
  /** Layers of the output. */
  layers: number;
}

function fileOf(hf: HfModel, name: string): ModelFile {
  return hf.model.parts?.fileOf.get(name) ?? hf.model;
}

/** Tensors of `hf` grouped: by layer index, and the non-layer ones split into pre and post. */
function groupTensors(hf: HfModel): { layers: Map<number, TensorInfo[]>; pre: TensorInfo[]; post: TensorInfo[] } {
  const layers = new Map<number, TensorInfo[]>();
  const pre: TensorInfo[] = [];
  const post: TensorInfo[] = [];
  for (const t of hf.model.tensors) {
    const m = LAYER_KEY.exec(t.name);
    if (m) {
      const i = Number(m[1]);
      if (!layers.has(i)) layers.set(i, []);
      layers.get(i)!.push(t);
    } else (t.name.startsWith("model.embed_tokens.") ? pre : post).push(t);
  }
  return { layers, pre, post };
}

export function alignSlices(slices: OutputSlice[], open: (path: string) => HfModel, layersOf: (path: string) => number): AlignedModels {
  const n = slices[0]!.sources.length;
  slices.forEach((s, i) => {
    if (s.sources.length !== n) throw configError(`slices[${i}].sources`, `every slice must have the same number of sources (slice 0 has ${n}, slice ${i} has ${s.sources.length})`);
    s.sources.forEach((src, j) => {
      const [start, end] = src.layerRange!;
      const available = layersOf(src.model);
      if (end > available) throw configError(`slices[${i}].sources[${j}].layer_range`, `[${start}, ${end}] goes past the ${available} layers of ${src.ref}`);
    });
  });
  const groups = new Map<string, ReturnType<typeof groupTensors>>();
  const grouped = (path: string) => {
    let g = groups.get(path);
    if (!g) groups.set(path, (g = groupTensors(open(path))));
    return g;
  };
  const entries: { tensor: TensorInfo; file: ModelFile }[][] = Array.from({ length: n }, () => []);
  const context = new Map<string, TensorContext>();
  const add = (name: string, slice: number, t: number, inputs: (TensorInfo | undefined)[], models: string[]) => {
    context.set(name, { slice, t, inputNames: inputs.map((x) => x?.name) });
    inputs.forEach((x, j) => {
      if (x) entries[j]!.push({ tensor: { ...x, name }, file: fileOf(open(models[j]!), x.name) });
    });
  };
  // Non-layer tensors of a slice's sources, by name, in the first source's order.
  const nonLayer = (slice: number, which: "pre" | "post", t: number) => {
    const models = slices[slice]!.sources.map((s) => s.model);
    const names: string[] = [];
    for (const m of models) for (const x of grouped(m)[which]) if (!names.includes(x.name)) names.push(x.name);
    for (const name of names) add(name, slice, t, models.map((m) => grouped(m)[which].find((x) => x.name === name)), models);
  };
  nonLayer(0, "pre", 0);
  let out = 0;
  slices.forEach((s, si) => {
    const models = s.sources.map((x) => x.model);
    const count = s.sources[0]!.layerRange![1] - s.sources[0]!.layerRange![0];
    for (let i = 0; i < count; i++, out++) {
      const t = count > 1 ? i / (count - 1) : 1;
      const perSource = s.sources.map((src) => grouped(src.model).layers.get(src.layerRange![0] + i) ?? []);
      const suffixes: string[] = [];
      perSource.forEach((list, j) => {
        const prefix = `model.layers.${s.sources[j]!.layerRange![0] + i}.`;
        for (const x of list) {
          const suffix = x.name.slice(prefix.length);
          if (!suffixes.includes(suffix)) suffixes.push(suffix);
        }
      });
      for (const suffix of suffixes) {
        const inputs = perSource.map((list, j) => list.find((x) => x.name === `model.layers.${s.sources[j]!.layerRange![0] + i}.${suffix}`));
        add(`model.layers.${out}.${suffix}`, si, t, inputs, models);
      }
    }
  });
  nonLayer(slices.length - 1, "post", 1);
  const positions = entries.map((list, j) => {
    const files: ModelFile[] = [];
    for (const e of list) if (!files.includes(e.file)) files.push(e.file);
    return combineParts(`mergekit source ${j}`, files, list);
  });
  return { positions, context, layers: out };
}
