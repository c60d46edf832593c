/**
 * Row inputs written as text, the same way in the classic Merge Board text and in our JSON:
 *
 * - `__O3__`: row 3's output (1-based, as the classic tool numbers lanes);
 * - `__NAME__`: the variable NAME;
 * - the name of a row: that row's output (a row's name is the model name its file will have,
 *   so this is what the classic tool meant by naming an earlier output);
 * - anything else: a model reference (path, model name or hash prefix).
 */
import type { Recipe, RecipeInput } from "./types";

const ROW_TOKEN = /^__O(\d+)__$/;
const VAR_TOKEN = /^__(.+)__$/;

/** Reads one input token; `rowNames` are every row's name (later rows too: validation reports those). */
export function parseInputToken(token: string, rowNames: readonly string[]): RecipeInput {
  const t = token.trim();
  const row = ROW_TOKEN.exec(t);
  if (row) return { kind: "row", row: Number(row[1]) - 1 };
  const v = VAR_TOKEN.exec(t);
  if (v) return { kind: "var", name: v[1]! };
  const named = rowNames.indexOf(t);
  if (named >= 0) return { kind: "row", row: named };
  return { kind: "model", ref: t };
}

/**
 * Writes an input as a token, or returns undefined when a bare token would read back as
 * something else (a model reference that looks like a variable or a row name, or a pinned one).
 */
export function inputToken(input: RecipeInput, recipe: Recipe, rowStyle: "index" | "name"): string | undefined {
  switch (input.kind) {
    case "var":
      return `__${input.name}__`;
    case "row":
      return rowStyle === "index" ? `__O${input.row + 1}__` : recipe.rows[input.row]!.name;
    case "model": {
      if (input.sha256 !== undefined || input.legacy !== undefined) return undefined;
      const back = parseInputToken(input.ref, recipe.rows.map((r) => r.name));
      return back.kind === "model" && back.ref === input.ref ? input.ref : undefined;
    }
  }
}
