/**
 * The files of a Hugging Face folder besides the weights: `config.json` (the base's, with
 * `torch_dtype` and, for a deeper passthrough, `num_hidden_layers` updated), the tokenizer and
 * generation files of the chosen source, and a model card (`README.md`) with the recipe.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { fsError } from "../errors";

/** Tokenizer files transformers and sentencepiece read, and the generation defaults. */
export const TOKENIZER_FILES = [
  "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
  "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "generation_config.json",
];

/** The tokenizer and generation files present in `folder`, to copy as they are. */
export async function supportFiles(folder: string): Promise<{ from: string; name: string }[]> {
  const names = await readdir(folder).catch((e) => { throw fsError(e, folder, "listing the tokenizer source"); });
  return TOKENIZER_FILES.filter((n) => names.includes(n)).map((name) => ({ from: join(folder, name), name }));
}

/**
 * The output's config.json: the base's, every field kept in its order, with `updates` applied
 * (fields the base lacks are added at the end). `dtype`, the newer transformers' name of
 * `torch_dtype`, is updated too when present.
 */
export function outputConfig(base: Record<string, unknown>, updates: { torch_dtype?: string; num_hidden_layers?: number }): Record<string, unknown> {
  const out: Record<string, unknown> = Object.fromEntries(Object.entries(base));
  if (updates.torch_dtype !== undefined) {
    out.torch_dtype = updates.torch_dtype;
    if (Object.hasOwn(base, "dtype")) out.dtype = updates.torch_dtype;
  }
  if (updates.num_hidden_layers !== undefined) out.num_hidden_layers = updates.num_hidden_layers;
  return out;
}

/** A model card: YAML front matter (tags, base models), what was merged, and the recipe. */
export function modelCard(card: { name: string; method: string; models: string[]; yaml?: string; recipe?: string; dtype: string }): string {
  const quote = (s: string) => JSON.stringify(s);
  return [
    "---",
    "library_name: transformers",
    "tags:",
    "- merge",
    "- tensormerge",
    "base_model:",
    ...card.models.map((m) => `- ${quote(m)}`),
    "---",
    `# ${card.name}`,
    "",
    `This model is a merge made with tensormerge, method \`${card.method}\`, tensors stored as ${card.dtype}.`,
    "",
    "## Models merged",
    "",
    ...card.models.map((m) => `- ${m}`),
    "",
    ...(card.yaml !== undefined ? ["## Configuration", "", "The mergekit configuration this model was made from (`tensormerge mergekit CONFIG OUT`):", "", "```yaml", card.yaml.trimEnd(), "```", ""] : []),
    ...(card.recipe !== undefined ? ["## Recipe", "", "```json", card.recipe.trimEnd(), "```", ""] : []),
  ].join("\n");
}
