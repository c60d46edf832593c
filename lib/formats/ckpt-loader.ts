/** Placeholder entry point for .ckpt support; replaced by the ckpt reader (lib/formats/ckpt/). */
import { MergeError } from "../errors";
import type { ModelFile } from "../model";

export async function readCkptModel(path: string, _kind: "ckpt" | "pickle"): Promise<ModelFile> {
  throw new MergeError("CKPT_UNSUPPORTED", `${path}: .ckpt files are not supported yet`, { path });
}
