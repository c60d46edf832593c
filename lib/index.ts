/**
 * tensormerge: merge model checkpoints at disk speed.
 *
 * @example
 * import { merge } from "tensormerge";
 * const report = await merge({ a, b, c, method: "add-difference", multiplier: 0.3, dtype: "fp16", out });
 */
export { merge, sweepOutputPath, type MergeOptions, type MergeReport, type MergeProgress } from "./merge";
export { bake, BAKE_METADATA_KEY, type BakeOptions, type BakeReport, type BakeLoraSpec } from "./lora/bake";
export { extractLora, type ExtractOptions, type ExtractReport } from "./lora/extract";
export { openLora, readLoraModel, looksLikeLora, type LoraFile, type LoraModule, type LoraAlgorithm, type LoraNaming } from "./lora/read";
export { summarizeLora, loraArchitecture, type LoraSummary } from "./lora/describe";
export { reproduceBake, bakeRecordOf, type BakeRecord, type BakeReproduction } from "./lora/reproduce";
export { MergeError, ERROR_CODES, isMergeError, type ErrorCode } from "./errors";
export { METHODS, resolveMethod, type MethodName } from "./methods/registry";
export type { MergeMethod } from "./methods/define";
export { openModel } from "./formats";
export { readSafetensors, layoutSafetensors, parseSafetensorsHeader } from "./formats/safetensors";
export { nativeAvailable, resolveEngine, type EngineName } from "./engine";
export { planBoard, type BoardPlan, type BoardRow, type PlanStats } from "./plan";
export { executePlan, preflight } from "./board";
export { DTYPES, OUTPUT_DTYPES, type Dtype, type OutputDtype } from "./dtypes";
export type { ModelFile, TensorInfo } from "./model";
export { parseMultipliers } from "./validate";
export { readCkptModel, layoutCkpt } from "./formats/ckpt";
export { layoutOutput, outputFormatForPath, type OutputFormat } from "./formats/output";
export {
  identifyModel, describeArchitecture, computeFileHashes, getFileHashes, legacyModelHash, HashCache,
  listModels, findModelFiles, resolveModel, inspectModel, checkCompatibility, assertCompatible,
  type Identification, type ArchitectureId, type FileHashes, type CompatibilityReport,
} from "./library";
export { planKeyEdits } from "./library/edits";
export {
  parseRecipe, formatRecipe, compileRecipe, runRecipe, reproduce, readEmbeddedRecipe, RECIPE_SCHEMA,
  type Recipe, type RecipeRow, type RecipeInput, type RunRecipeOptions, type RecipeRunReport, type ReproduceOptions, type ReproduceReport,
} from "./recipes";
export {
  blockMapFor, sd3Blocks, SD_BLOCKS, SDXL_BLOCKS, FLUX_BLOCKS, parseBlockValues, blockValue, valueForKey, summarizeBlocks,
  BLOCK_PRESETS, PRESET_ALIASES, presetName, presetValues, nearestPresetNames,
  type BlockMap, type BlockMapId, type BlockValues, type BlockValuesForm, type ParseBlockOptions, type BlockSummary, type BlockCount,
} from "./blocks";
export { compareModels, type CompareReport, type CompareSeries, type CompareOptions, type CompareProgress } from "./compare";
export { startUiServer, type UiServer, type UiServerOptions } from "./ui/server";
export {
  openHfFolder, runMergekit, parseMergekitConfig, evaluateSetting, inspectHfFolder, identifyLlm, assertLlmCompatible, parseShardSize,
  type HfModel, type MergekitOptions, type MergekitReport, type MergekitConfig, type HfInspectReport, type LlmIdentification,
} from "./hf";
