/**
 * The model library: identify, hash, list and resolve models; check that models can be merged;
 * plan the VAE / discard / prune key edits; copy model configs.
 */
export { ARCHITECTURES, ARCHITECTURE_IDS, describeArchitecture, formatParams, identifyModel } from "./identify";
export type { ArchitectureId, ArchitectureInfo, ComponentId, ComponentSummary, Identification, ModelKind, TensorShape } from "./identify";
export { computeFileHashes, hashCounters, legacyModelHash, safetensorsDataOffset, sha256File } from "./hash";
export type { FileHashes, HashOptions } from "./hash";
export { HashCache, defaultHashCachePath, getFileHashes } from "./hash-cache";
export type { GetHashesOptions, HashResult } from "./hash-cache";
export { MODEL_EXTENSIONS, defaultModelDirs, findModelFiles, isModelFileName, listModels } from "./scan";
export type { FindResult, FoundModelFile, ListOptions, ListProgress, ModelEntry } from "./scan";
export { closeNames, resolveModel } from "./resolve";
export type { ResolveOptions } from "./resolve";
export { formatBytes, formatInspectReport, inspectModel, inspectOpenedModel, parseMetadataValues } from "./inspect";
export type { InspectReport } from "./inspect";
export { assertCompatible, checkCompatibility } from "./compat";
export type { CompatModelSummary, CompatProblem, CompatibilityOptions, CompatibilityReport, KeyDifference, ShapeMismatch } from "./compat";
export { VAE_PREFIX, compileDiscardPatterns, isPrunable, planKeyEdits, vaeTensorsByOutputName } from "./edits";
export type { KeyEditOptions, KeyEditPlan, VaeBakeReport } from "./edits";
export { configCandidates, configPathFor, copyModelConfig, findModelConfig } from "./config";
export type { ConfigSource } from "./config";
