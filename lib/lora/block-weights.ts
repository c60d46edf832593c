/**
 * LoRA block weights ("lbw"): a multiplier of the LoRA ratio per block, typed as in
 * hako-mikan/sd-webui-lora-block-weight (and SuperMerger's LoRA tab):
 * - SD 1.x / 2.x: 17 values `BASE, IN01, IN02, IN04, IN05, IN07, IN08, M00, OUT03 … OUT11` (the
 *   blocks that hold attention, lbw's BLOCKID17) or 26 values `BASE, IN00 … IN11, M00, OUT00 … OUT11`;
 * - SDXL: 12 values `BASE, IN04, IN05, IN07, IN08, M00, OUT00 … OUT05` or 20 values
 *   `BASE, IN00 … IN08, M00, OUT00 … OUT08`.
 * - FLUX: 61 values `CLIP, T5, IN, D00 … D18, S00 … S37, OUT` (lora-block-weight's and
 *   SuperMerger's BLOCKIDFLUX: CLIP-L, T5, the input projections `img_in`/`txt_in`/`time_in`/
 *   `vector_in`/`guidance_in`, the 19 double and 38 single blocks, `final_layer`).
 * BASE is the text encoder(s). A block a short form leaves out (they hold only LoCon convs)
 * keeps the full ratio (value 1): our choice, stated in the README.
 */
import { MergeError } from "../errors";
import type { ArchitectureId } from "../library/identify";

const range = (p: string, from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `${p}${String(from + i).padStart(2, "0")}`);

export const LORA_BLOCK_FORMS: Record<"sd" | "sdxl" | "flux", readonly (readonly string[])[]> = {
  sd: [
    ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", ...range("OUT", 3, 11)],
    ["BASE", ...range("IN", 0, 11), "M00", ...range("OUT", 0, 11)],
  ],
  sdxl: [
    ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", ...range("OUT", 0, 5)],
    ["BASE", ...range("IN", 0, 8), "M00", ...range("OUT", 0, 8)],
  ],
  flux: [["CLIP", "T5", "IN", ...range("D", 0, 18), ...range("S", 0, 37), "OUT"]],
};

const FAMILY_LABEL = { sd: "SD 1.x/2.x", sdxl: "SDXL", flux: "FLUX" } as const;

/** The weight of each block for a spec typed by the user ("1,0,0,…" or numbers). */
export function loraBlockWeights(spec: string | readonly number[], arch: ArchitectureId): (block: string) => number {
  const family = arch.startsWith("sd1") || arch === "sd2" ? "sd" : arch === "sdxl" ? "sdxl" : arch === "flux" ? "flux" : undefined;
  if (!family) throw new MergeError("INVALID_ARGUMENT", `--lora-blocks: LoRA block weights are defined for SD 1.x/2.x, SDXL and FLUX, not for ${arch}`);
  const values = typeof spec === "string" ? spec.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number) : [...spec];
  const forms = LORA_BLOCK_FORMS[family];
  const names = forms.find((f) => f.length === values.length);
  if (!names) throw new MergeError("INVALID_ARGUMENT", `--lora-blocks: ${values.length} values; ${FAMILY_LABEL[family]} takes ${forms.map((f) => `${f.length} (${f[0]}, ${f[1]}, …, ${f[f.length - 1]})`).join(" or ")}`);
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) throw new MergeError("INVALID_ARGUMENT", `--lora-blocks: value ${i + 1} (${names[i]}) is not a finite number`);
  });
  const table = new Map(names.map((n, i) => [n, values[i]!]));
  return (block) => table.get(block) ?? 1;
}
