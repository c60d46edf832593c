/** Hugging Face model folders (sharded language models) in and out, and mergekit configurations. */
export { openHfFolder, isModelFolder, type HfModel } from "./folder";
export { identifyLlm, assertLlmCompatible, type LlmIdentification } from "./architecture";
export { writeHfFolder, parseShardSize, DEFAULT_SHARD_SIZE, type HfWriteReport } from "./output";
export { runMergekit, loadMergekitConfig, type MergekitOptions, type MergekitReport } from "./mergekit";
export { parseMergekitConfig, evaluateSetting, type MergekitConfig } from "./mergekit-config";
export { inspectHfFolder, formatHfInspectReport, type HfInspectReport } from "./inspect";
