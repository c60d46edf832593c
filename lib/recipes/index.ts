/**
 * Recipes: the merge board as text (classic Merge Board text or our JSON), compiled into one
 * streaming pass, with the recipe carried in every output's metadata and `reproduce` to rebuild
 * a model from it. JSON rows with `loras` bake LoRAs into their A after the board
 * (bake-rows.ts); `reproduce` rebuilds a baked model from its bake record (lib/lora/reproduce.ts).
 *
 * @example
 * import { parseRecipe, runRecipe } from "tensormerge/dist/lib/recipes";
 * const recipe = parseRecipe(readFileSync("sample.txt", "utf8"));
 * await runRecipe(recipe, { bindings: { SD14: "sd14", SD15: "sd15", F222: "f222", WD13: "wd13" }, outDir: "out" });
 */
import { MergeError } from "../errors";
import { formatClassicRecipe, parseClassicRecipe } from "./classic";
import { formatJsonRecipe, parseJsonRecipe } from "./json";
import type { Recipe } from "./types";

export type RecipeTextFormat = "classic" | "json";

/** Which format a recipe text is in: JSON starts with "{", anything else is classic text. */
export function detectRecipeFormat(text: string): RecipeTextFormat {
  return text.trimStart().startsWith("{") ? "json" : "classic";
}

/**
 * Parses a recipe in either format and validates it.
 *
 * @example
 * parseRecipe("a = __SD15__ + __F222__, 0.5, fp16, safetensors"); // classic text
 * parseRecipe('{"rows": [{"name": "a", "a": "__SD15__", "b": "__F222__", "multiplier": 0.5}]}');
 */
export function parseRecipe(text: string, format: RecipeTextFormat = detectRecipeFormat(text)): Recipe {
  if (text.trim() === "") throw new MergeError("RECIPE_INVALID", "the recipe is empty");
  return format === "json" ? parseJsonRecipe(text) : parseClassicRecipe(text);
}

/** Writes a recipe in the given format. */
export function formatRecipe(recipe: Recipe, format: RecipeTextFormat): string {
  return format === "json" ? formatJsonRecipe(recipe) : formatClassicRecipe(recipe);
}

export { formatClassicRecipe, parseClassicRecipe } from "./classic";
export { formatJsonRecipe, parseJsonRecipe, recipeToJson, RECIPE_SCHEMA, RECIPE_FORMAT } from "./json";
export { validateRecipe, sanitizeOutputName, type RecipeCheck } from "./validate";
export { parseBindingsText, parseVarArgs, variableName, type Bindings } from "./bindings";
export { compileRecipe, outputPathFor, type CompileOptions, type CompiledRecipe, type CompiledRow, type CompiledFile, type CompiledOutput, type CompiledSource } from "./compile";
export { runRecipe, type RunRecipeOptions, type RecipeRunReport, type RecipeOutputReport, type RecipeProgress } from "./run";
export { reproduce, readEmbeddedRecipe, type ReproduceOptions, type ReproduceReport } from "./reproduce";
export type { BakeReproduction, BakeRecord } from "../lora/reproduce";
export { outputMetadata, lineageRecipe, embeddedRecipe, virtualIdentity, RECIPE_METADATA_KEY, type InputIdentity, type OutputStep } from "./metadata";
export { appendHistory, parseHistory, type HistoryEntry, type HistoryInput } from "./history";
export { inputReadReport, type InputReadReport } from "./reads";
export { pyDumps, pyLoads, pyFloatRepr, type PyJson } from "./pyjson";
export { usedVariables, isBakeRow, type Recipe, type RecipeRow, type RecipeInput, type RecipeVariable, type RowProduces, type RecipeLora } from "./types";
