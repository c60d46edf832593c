/**
 * Block weights: block maps per architecture, the value forms users type, and a model's blocks.
 *
 * @example
 * const model = await openModel("sd_xl_base_1.0.safetensors");
 * const summary = summarizeBlocks(model);            // 20 blocks, tensors and params each
 * const values = parseBlockValues("GRAD_V", summary.map!);
 */
import { identifyModel, type ArchitectureId, type TensorShape } from "../library/identify";
import { numelOf } from "../model";
import { blockMapFor, type BlockMap } from "./maps";

export { blockMapFor, sd3Blocks, SD_BLOCKS, SDXL_BLOCKS, FLUX_BLOCKS, type BlockMap, type BlockMapId } from "./maps";
export { parseBlockValues, blockValue, valueForKey, type BlockValues, type BlockValuesForm, type ParseBlockOptions } from "./parse";
export { BLOCK_PRESETS, PRESET_ALIASES, presetName, presetValues, nearestPresetNames } from "./presets";

export interface BlockCount {
  block: string;
  tensors: number;
  params: number;
}

export interface BlockSummary {
  architecture: ArchitectureId;
  /** The architecture's map; undefined when it has none (per-key patterns only). */
  map: BlockMap | undefined;
  /** Every block of the map, in order, with what the model holds in it (zeros included). */
  blocks: BlockCount[];
  /** Tensors in no block: not merged, copied from model A. */
  unassigned: { name: string; params: number }[];
}

/** A model's blocks: tensors and parameters per block, and the tensors in none. */
export function summarizeBlocks(model: { tensors: readonly TensorShape[] }): BlockSummary {
  const { architecture } = identifyModel(model);
  const map = blockMapFor(architecture, model.tensors.map((t) => t.name));
  const counts = new Map<string, BlockCount>((map?.names ?? []).map((b) => [b, { block: b, tensors: 0, params: 0 }]));
  const unassigned: { name: string; params: number }[] = [];
  for (const t of model.tensors) {
    const block = map?.blockOf(t.name) ?? null;
    const params = numelOf(t.shape);
    const c = block === null ? undefined : counts.get(block);
    if (!c) {
      unassigned.push({ name: t.name, params });
      continue;
    }
    c.tensors++;
    c.params += params;
  }
  return { architecture, map, blocks: [...counts.values()], unassigned };
}
