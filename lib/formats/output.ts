/**
 * Output file layouts: where each tensor's data goes and which literal bytes (headers, zip
 * records) surround it. The engines fill the data; the layout decides everything else.
 */
import type { Dtype } from "../dtypes";
import { MergeError } from "../errors";
import { layoutCkpt } from "./ckpt/writer";
import { layoutSafetensors } from "./safetensors";

export type OutputFormat = "safetensors" | "ckpt";

export interface OutputEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
}

export interface OutputLayout {
  format: OutputFormat;
  /** Final file size in bytes. */
  size: number;
  /** Absolute data offset of each entry, in entry order. */
  offsets: number[];
  /** Byte ranges written as they are. */
  literals: { offset: number; data: Uint8Array }[];
  /** Ranges whose CRC-32 the engine must compute (zip formats). */
  crc32Ranges?: { offset: number; length: number }[];
  /** Given the CRC-32 of each range, the literal patches to write before the file is renamed. */
  finish?: (crc32: number[]) => { offset: number; data: Uint8Array }[];
}

export type OutputLayoutFn = (entries: OutputEntry[], metadata: Record<string, string>) => OutputLayout;

const layouts = new Map<OutputFormat, OutputLayoutFn>([
  ["safetensors", (entries, metadata) => {
    const l = layoutSafetensors(entries, metadata);
    return { format: "safetensors", size: l.size, offsets: l.offsets, literals: [{ offset: 0, data: l.header }] };
  }],
  ["ckpt", (entries, metadata) => layoutCkpt(entries, metadata)],
]);

/** Lets a format module (ckpt) register its writer without a dependency cycle. */
export function registerOutputLayout(format: OutputFormat, fn: OutputLayoutFn): void {
  layouts.set(format, fn);
}

export function layoutOutput(format: OutputFormat, entries: OutputEntry[], metadata: Record<string, string>): OutputLayout {
  const fn = layouts.get(format);
  if (!fn) throw new MergeError("INVALID_ARGUMENT", `output format "${format}" is not supported`);
  return fn(entries, metadata);
}

export function outputFormatForPath(path: string): OutputFormat {
  return /\.(ckpt|pt|pth)$/i.test(path) ? "ckpt" : "safetensors";
}
