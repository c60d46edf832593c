/**
 * Model configs: the `<name>.yaml` beside a checkpoint (A1111 loads it instead of its default
 * config). SD 2.x v-prediction models are unusable without theirs, and the weights cannot tell
 * (see identify.ts), so a merge copies the config of one input beside its output, as the classic
 * tool does: "A, B or C" takes the first input that has one; "B" or "C" only that model's.
 */
import { randomBytes } from "node:crypto";
import { copyFile, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, extname, join } from "node:path";
import { fsError } from "../errors";

/** `models/x.safetensors` → `models/x.yaml`. */
export function configPathFor(modelPath: string): string {
  const ext = extname(modelPath);
  return join(dirname(modelPath), `${basename(modelPath, ext)}.yaml`);
}

/** The config file beside a model, or null when it has none. */
export async function findModelConfig(modelPath: string): Promise<string | null> {
  const path = configPathFor(modelPath);
  const s = await stat(path).catch(() => undefined);
  return s?.isFile() ? path : null;
}

/**
 * Copies the config of the first model in `from` that has one to `<output name>.yaml` beside
 * `outPath` (atomically: a temporary file renamed into place; an existing config is replaced,
 * as the classic tool does). Returns what was copied, or null when no model has a config.
 *
 * @example
 * await copyModelConfig([a, b, c], "out/merged.safetensors"); // "A, B or C"
 * await copyModelConfig(b, "out/merged.safetensors");         // "B"
 */
export async function copyModelConfig(from: string | readonly string[], outPath: string): Promise<{ source: string; destination: string } | null> {
  const sources = typeof from === "string" ? [from] : from;
  for (const model of sources) {
    const source = await findModelConfig(model);
    if (!source) continue;
    const destination = configPathFor(outPath);
    const tmp = join(dirname(destination), `.tensormerge-${randomBytes(6).toString("hex")}.yaml.tmp`);
    try {
      await copyFile(source, tmp);
      await rename(tmp, destination);
    } catch (e) {
      await unlink(tmp).catch(() => undefined);
      throw fsError(e, destination, "copying the model config");
    }
    return { source, destination };
  }
  return null;
}

/** Which inputs' configs to consider, from the classic tool's choice. */
export type ConfigSource = "abc" | "a" | "b" | "c" | "none";

/** The candidate models for a config source, in order. */
export function configCandidates(source: ConfigSource, models: { a: string; b?: string; c?: string }): string[] {
  const pick = (x: string | undefined) => (x === undefined ? [] : [x]);
  switch (source) {
    case "abc": return [...pick(models.a), ...pick(models.b), ...pick(models.c)];
    case "a": return pick(models.a);
    case "b": return pick(models.b);
    case "c": return pick(models.c);
    default: return [];
  }
}
