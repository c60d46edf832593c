/** Opens a model file of any supported format, by content (magic bytes), not by extension. */
import { open } from "node:fs/promises";
import { MergeError, fsError } from "../errors";
import type { ModelFile, ModelFormat } from "../model";
import { normaliseModelKeys } from "../keys";
import { readSafetensors } from "./safetensors";

const ZIP_MAGIC = 0x04034b50; // "PK\x03\x04", little-endian

export async function detectFormat(path: string): Promise<ModelFormat | "pickle" | "unknown"> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "opening");
  }
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await handle.read(head, 0, 8, 0);
    if (bytesRead >= 4 && head.readUInt32LE(0) === ZIP_MAGIC) return "ckpt";
    if (bytesRead >= 2 && head[0] === 0x80 && head[1]! <= 5) return "pickle"; // legacy torch.save
    if (bytesRead === 8) {
      // safetensors: u64 length followed by '{'
      const n = head.readBigUInt64LE(0);
      if (n > 1n) {
        const brace = Buffer.alloc(1);
        await handle.read(brace, 0, 1, 8);
        if (brace[0] === 0x7b) return "safetensors";
      }
    }
    return "unknown";
  } finally {
    await handle.close();
  }
}

/**
 * Reads the tensor table of a model file, with 2022-era SD 1.x key names normalised as the
 * classic tool does on load (lib/keys.ts). No tensor data is read.
 */
export async function openModel(path: string): Promise<ModelFile> {
  return withModernKeyNames(await openModelAsStored(path));
}

function withModernKeyNames(model: ModelFile): ModelFile {
  const { tensors, renames } = normaliseModelKeys(model.tensors);
  if (renames.renamed === 0 && renames.collisions.length === 0) return model;
  const notes = [...model.notes];
  if (renames.renamed) notes.push(`${renames.renamed} keys of the 2022 text-encoder layout (cond_stage_model.transformer.* without text_model.) renamed to the modern names, as the classic tool does`);
  if (renames.collisions.length) notes.push(`${renames.collisions.length} old-layout keys kept their names because the file also has the modern ones (for example ${renames.collisions[0]})`);
  return { ...model, tensors, byName: new Map(tensors.map((t) => [t.name, t])), notes, ...(renames.renamed ? { renamedKeys: renames.renamed } : {}) };
}

async function openModelAsStored(path: string): Promise<ModelFile> {
  const format = await detectFormat(path);
  switch (format) {
    case "safetensors":
      return readSafetensors(path);
    case "ckpt":
    case "pickle":
      return (await import("./ckpt-loader")).readCkptModel(path, format);
    default:
      if (path.endsWith(".safetensors")) return readSafetensors(path); // gives the precise format error
      throw new MergeError("FORMAT_UNKNOWN", `${path}: not a safetensors or PyTorch checkpoint file`, { path });
  }
}
