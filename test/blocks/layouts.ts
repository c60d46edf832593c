/** The real layouts the block tests read: the library fixtures' folder, plus FLUX.1 and SD 3.5, plain or gzipped. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import type { LayoutEntry } from "../../lib/synthetic";
import { layoutsDir } from "../library/fixtures";

export type BlockLayoutName = "sd15" | "sd15_full_ema" | "sd15_inpainting" | "sd15_fp16_pruned" | "sd21" | "sdxl" | "flux1_dev" | "sd35_medium";

export function readLayout(name: BlockLayoutName): LayoutEntry[] {
  const plain = join(layoutsDir(), `${name}.json`);
  const text = existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
  return JSON.parse(text) as LayoutEntry[];
}

export interface LayoutComponents {
  components: Record<string, { tensors: number; params: number }>;
}

export function readSummary(): Record<string, LayoutComponents> {
  const plain = join(layoutsDir(), "summary.json");
  const text = existsSync(plain) ? readFileSync(plain, "utf8") : gunzipSync(readFileSync(`${plain}.gz`)).toString("utf8");
  return JSON.parse(text) as Record<string, LayoutComponents>;
}
