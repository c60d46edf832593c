/**
 * Output layouts for a plan that may have thousands of outputs (a sweep of 10,001 values): each
 * output's size and tensor offsets are known when planning (the disk-space check and the job
 * need them), but its header bytes (about 100 KiB for an SD 1.5 safetensors file, more for a
 * .ckpt) are only built when its pass runs, and not kept.
 *
 * Sizes and offsets come from one full layout per *layout class*: outputs of the same tensors
 * whose metadata has the same keys, in the same order, with values of the same UTF-8 and
 * JSON-escaped byte lengths lay out identically (the safetensors header is JSON, the .ckpt pickle
 * stores strings by UTF-8 length); short values are part of the class as they are (a .ckpt drops
 * `format: "pt"`). A sweep has a few classes (the multiplier's digits vary), not one per output.
 * When an output's header is built in full, its size and offsets are checked against its class,
 * so a format whose layout depended on more would fail loudly before anything is written.
 */
import { MergeError } from "./errors";
import { layoutOutput, type OutputEntry, type OutputFormat, type OutputLayout } from "./formats/output";

/** An output's layout: size and offsets at hand, literal bytes built on demand. */
export class PlannedLayout implements OutputLayout {
  private cached: WeakRef<OutputLayout> | undefined;

  constructor(
    readonly format: OutputFormat,
    readonly size: number,
    /** Shared with every output of the same layout class: never modify. */
    readonly offsets: number[],
    /** The tensors, in file order (lib/hf shards a folder output by their sizes). */
    readonly entries: OutputEntry[],
    private readonly metadata: Record<string, string>,
    first?: OutputLayout,
  ) {
    if (first) this.cached = new WeakRef(first);
  }

  /** The whole layout, rebuilt when the last one was collected (layouts are deterministic). */
  private full(): OutputLayout {
    let layout = this.cached?.deref();
    if (layout) return layout;
    layout = layoutOutput(this.format, this.entries, this.metadata);
    if (layout.size !== this.size || layout.offsets.length !== this.offsets.length || layout.offsets.some((o, i) => o !== this.offsets[i])) {
      throw new MergeError("INTERNAL", `planner: an output's ${this.format} layout differs from the one planned for its layout class`);
    }
    this.cached = new WeakRef(layout);
    return layout;
  }

  get literals(): OutputLayout["literals"] {
    return this.full().literals;
  }
  get crc32Ranges(): OutputLayout["crc32Ranges"] {
    return this.full().crc32Ranges;
  }
  get finish(): OutputLayout["finish"] {
    return this.full().finish;
  }
}

/** What decides an output's sizes and offsets, beyond its tensors (see the file comment). */
function layoutClass(format: OutputFormat, metadata: Record<string, string>): string {
  const shape = Object.entries(metadata).map(([k, v]) =>
    typeof v === "string" ? [k, Buffer.byteLength(v), Buffer.byteLength(JSON.stringify(v)), v.length <= 16 ? v : null] : [k, JSON.stringify(v) ?? String(v)],
  );
  return `${format}\n${JSON.stringify(shape)}`;
}

/** Lays out the outputs of one row (all with the same tensors), one full layout per class. */
export function layoutRowOutputs(entries: OutputEntry[], outputs: { format: OutputFormat; metadata: Record<string, string> }[]): PlannedLayout[] {
  const classes = new Map<string, { size: number; offsets: number[] }>();
  return outputs.map(({ format, metadata }) => {
    const key = layoutClass(format, metadata);
    const known = classes.get(key);
    if (known) return new PlannedLayout(format, known.size, known.offsets, entries, metadata);
    const layout = layoutOutput(format, entries, metadata);
    classes.set(key, { size: layout.size, offsets: layout.offsets });
    return new PlannedLayout(format, layout.size, layout.offsets, entries, metadata, layout);
  });
}
