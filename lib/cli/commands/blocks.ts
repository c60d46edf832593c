/** `tensormerge blocks`: the blocks of a model's architecture (the names block weights take), with tensors and parameters per block, and the tensors in no block. */
import { summarizeBlocks, type BlockSummary } from "../../blocks";
import { openModel } from "../../formats";
import { isModelFolder, openHfFolder } from "../../hf/folder";
import { ARCHITECTURES, formatParams } from "../../library/identify";
import { HashCache } from "../../library/hash-cache";
import { resolveModel } from "../../library/resolve";
import { defineCommand, flagArg } from "../command";
import { renderTable } from "./list";

/** At most this many unassigned tensors are named in the table view (all of them with --json or --all). */
const UNASSIGNED_SHOWN = 20;

export function formatBlockSummary(path: string, s: BlockSummary, all = false): string {
  const arch = `${ARCHITECTURES[s.architecture].label} (${s.architecture})`;
  if (!s.map) {
    return `${path}: ${arch}: no block map for this architecture; set values per key pattern instead\n`;
  }
  const lines = [`${path}: ${arch}, ${s.map.label}: ${s.map.names.join(",")}`, ""];
  const map = s.map;
  const rows = s.blocks.map((b) => [b.block, String(b.tensors), formatParams(b.params), map.keysOf(b.block)]);
  lines.push(renderTable(["BLOCK", "TENSORS", "PARAMS", "KEYS"], rows).trimEnd());
  const params = s.unassigned.reduce((p, u) => p + u.params, 0);
  lines.push("", `no block (copied from A): ${s.unassigned.length} tensors, ${formatParams(params)} params`);
  const shown = all ? s.unassigned : s.unassigned.slice(0, UNASSIGNED_SHOWN);
  for (const u of shown) lines.push(`  ${u.name}`);
  if (shown.length < s.unassigned.length) lines.push(`  … ${s.unassigned.length - shown.length} more (--all lists them)`);
  return lines.join("\n") + "\n";
}

export const blocksCommand = defineCommand({
  name: "blocks",
  summary: "show the blocks of a model's architecture (names for --blocks), with tensors and parameters per block",
  usage: "blocks MODEL [--json] [--all]",
  positionals: true,
  options: {
    json: { type: "boolean", description: "print JSON: architecture, block names, counts per block, tensors in no block" },
    all: { type: "boolean", description: "list every tensor in no block" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    if (args.positionals.length !== 1) {
      io.err.write("tensormerge blocks: give one model (path, name or hash); see --help\n");
      return 2;
    }
    const ref = args.positionals[0]!;
    // A Hugging Face folder (a sharded language model) is one model: its blocks are EMB, L00…, OUT.
    const folder = await isModelFolder(ref);
    const path = folder ? ref : await resolveModel(ref, { cache: await HashCache.open(), signal });
    const summary = summarizeBlocks(folder ? (await openHfFolder(ref)).model : await openModel(path));
    if (flagArg(args, "json")) {
      const { map, ...rest } = summary;
      const body = { path, ...rest, map: map ? { id: map.id, label: map.label, names: map.names, legend: Object.fromEntries(map.legend) } : null };
      io.out.write(JSON.stringify(body, null, 2) + "\n");
    } else {
      io.out.write(formatBlockSummary(path, summary, flagArg(args, "all")));
    }
    return 0;
  },
});
