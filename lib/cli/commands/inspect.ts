/** `tensormerge inspect`: a model's header, architecture, components, dtypes and metadata; with several files, whether they can be merged. */
import { openModel } from "../../formats";
import { checkCompatibility, type CompatibilityReport } from "../../library/compat";
import { getFileHashes, HashCache } from "../../library/hash-cache";
import { formatInspectReport, inspectOpenedModel, withLoraSummary, type InspectReport } from "../../library/inspect";
import { resolveModel } from "../../library/resolve";
import { defineCommand, flagArg } from "../command";
import { isModelFolder } from "../../hf/folder";
import { formatHfInspectReport, inspectHfFolder, type HfInspectReport } from "../../hf/inspect";

function formatCompatibility(r: CompatibilityReport): string {
  const lines = [`compatibility (${r.models.map((m) => `${m.label} = ${m.architectureLabel}`).join(", ")}): ${r.compatible ? "can be merged" : "CANNOT be merged"}`];
  for (const reason of r.reasons) lines.push(`  error: ${reason}`);
  for (const w of r.warnings.slice(0, 20)) lines.push(`  note: ${w}`);
  if (r.warnings.length > 20) lines.push(`  … ${r.warnings.length - 20} more notes`);
  const exceptions = r.shapeMismatches.filter((s) => s.kind === "input-channels");
  for (const s of exceptions) lines.push(`  note: ${s.tensor}: ${s.label} [${s.other.join(", ")}] merged into the first channels of A [${s.a.join(", ")}]`);
  return lines.join("\n") + "\n";
}

export const inspectCommand = defineCommand({
  name: "inspect",
  summary: "show a model's architecture, components, dtypes and metadata (several models: also whether they can be merged)",
  usage: "inspect MODEL [MODEL…] [--json] [--hash]   (a Hugging Face folder: inspect FOLDER)",
  positionals: true,
  options: {
    json: { type: "boolean", description: "print JSON" },
    hash: { type: "boolean", description: "also show the file's hashes (computed once, then cached)" },
    verbose: { type: "boolean", description: "stack traces on errors" },
  },
  async run(args, io, signal) {
    if (args.positionals.length === 0) {
      io.err.write("tensormerge inspect: give a model (path, name or hash); see --help\n");
      return 2;
    }
    // The cache answers hash references (a file hashed once is never read again for that);
    // hashes are shown only with --hash.
    const cache = await HashCache.open();
    const showHashes = flagArg(args, "hash");
    const models = [];
    const reports: InspectReport[] = [];
    // Hugging Face model folders (sharded language models) have their own report.
    if (args.positionals.length === 1 && (await isModelFolder(args.positionals[0]!))) {
      const report: HfInspectReport = await inspectHfFolder(args.positionals[0]!);
      io.out.write(flagArg(args, "json") ? JSON.stringify(report, null, 2) + "\n" : formatHfInspectReport(report));
      return 0;
    }
    for (const ref of args.positionals) {
      const path = await resolveModel(ref, { cache, signal });
      const model = await openModel(path);
      const report = await withLoraSummary(inspectOpenedModel(model), model);
      if (showHashes) {
        const { cached: _cached, ...hashes } = await getFileHashes(path, { cache, signal });
        report.hashes = hashes;
      }
      models.push(model);
      reports.push(report);
    }
    const compat = models.length > 1 ? checkCompatibility(models) : undefined;
    if (flagArg(args, "json")) {
      const body = reports.length === 1 ? reports[0] : { models: reports, compatibility: compat };
      io.out.write(JSON.stringify(body, null, 2) + "\n");
    } else {
      io.out.write(reports.map(formatInspectReport).join("\n"));
      if (compat) io.out.write("\n" + formatCompatibility(compat));
    }
    return compat && !compat.compatible ? 1 : 0;
  },
});
