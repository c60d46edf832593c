/**
 * Opens a model file of any supported format, by content, not by extension. Each format is
 * recognised by what it requires, checked in an order where no valid file of one format can
 * pass the test of another:
 *
 * - safetensors: a u64 little-endian header length N, then the JSON object, so byte 8 is "{".
 *   Checked first because N is arbitrary: a header of 0x280 bytes starts with 0x80 0x02, a
 *   pickle protocol marker, and one of 0x04034b50 bytes with "PK\x03\x04". The reader then
 *   checks N against the file size, so a truncated file is reported as a truncated safetensors
 *   file, not as a broken pickle.
 * - zip (torch.save since 1.6): the local-file signature "PK\x03\x04". Byte 8 of such a file is
 *   the low byte of its compression method (0 stored, 8 deflated), never "{".
 * - legacy torch.save: a pickle, 0x80 then the protocol (torch writes 2 or more). Byte 8 is part
 *   of the magic number 0x1950a86a20f9469cfc6c (protocol 2, 3: 0xf9) or of a frame length
 *   (protocol 4, 5: 0x00), never "{".
 */
import { open } from "node:fs/promises";
import { MergeError, fsError } from "../errors";
import type { ModelFile, ModelFormat } from "../model";
import { normaliseModelKeys } from "../keys";
import { stampOf } from "../engine/input-stamps";
import { readSafetensors } from "./safetensors";
import { readFp8Scales } from "../scaled-fp8";

const ZIP_MAGIC = 0x04034b50; // "PK\x03\x04", little-endian
const PICKLE_PROTO = 0x80;
const HIGHEST_PICKLE_PROTOCOL = 5;
/** Bytes of the file's start that detection looks at. */
export const DETECT_BYTES = 9;

export type DetectedFormat = ModelFormat | "pickle" | "unknown";

/**
 * The format of a file, from its first `DETECT_BYTES` bytes (fewer if the file is shorter).
 *
 * @example
 * detectFormatOf(Buffer.from([0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x7b])); // "safetensors" (N = 0x280)
 */
export function detectFormatOf(head: Uint8Array): DetectedFormat {
  if (head.length >= DETECT_BYTES && head[8] === 0x7b) return "safetensors";
  if (head.length >= 4 && new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true) === ZIP_MAGIC) return "ckpt";
  if (head.length >= 2 && head[0] === PICKLE_PROTO && head[1]! <= HIGHEST_PICKLE_PROTOCOL) return "pickle";
  return "unknown";
}

export async function detectFormat(path: string): Promise<DetectedFormat> {
  let handle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw fsError(e, path, "opening");
  }
  try {
    const head = Buffer.alloc(DETECT_BYTES);
    const { bytesRead } = await handle.read(head, 0, DETECT_BYTES, 0);
    return detectFormatOf(head.subarray(0, bytesRead));
  } catch (e) {
    throw fsError(e, path, "reading");
  } finally {
    await handle.close();
  }
}

/**
 * Reads the tensor table of a model file, with 2022-era SD 1.x key names normalised as the
 * classic tool does on load (lib/keys.ts). No tensor data is read.
 */
export async function openModel(path: string): Promise<ModelFile> {
  // Stamped before the header is read: a rewrite between here and the merge (while inputs are
  // hashed for the recipe, say) would make both the plan and the pinned hash wrong.
  const stamp = await stampOf(path).catch(() => undefined); // a missing file gets its error below
  const model = await readFp8Scales(withModernKeyNames(await openModelAsStored(path)));
  return stamp ? { ...model, stamp } : model;
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
