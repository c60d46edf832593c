/**
 * `tensormerge demo`: the main job on built-in data. Builds three small models with the real
 * SD 1.5 key layout (shrunken shapes) in a temporary folder, merges them with add-difference,
 * checks one tensor against the formula, and compares the native and TS engines.
 */
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nativeAvailable } from "../../engine";
import { readSafetensors } from "../../formats/safetensors";
import { MergeError } from "../../errors";
import { merge } from "../../merge";
import { formatBytes } from "../../outputs";
import { loadBuiltinLayout, shrinkLayout, writeSyntheticModel } from "../../synthetic";
import { f16BitsToF32Bits, bitsToF32 } from "../../dtypes";
import { defineCommand, flagArg, stringArg } from "../command";
import { printMergeReport } from "./merge";

async function readF32(path: string, name: string, index: number): Promise<number> {
  const model = await readSafetensors(path);
  const t = model.byName.get(name)!;
  const buf = await readFile(path);
  if (t.dtype === "F16") return bitsToF32(f16BitsToF32Bits(buf.readUInt16LE(t.offset + index * 2)));
  return buf.readFloatLE(t.offset + index * 4);
}

export const demoCommand = defineCommand({
  name: "demo",
  summary: "build three small SD 1.5-layout models and merge them (no files of yours needed)",
  usage: "demo [--keep] [--shrink N]",
  options: {
    keep: { type: "boolean", description: "keep the demo folder and print its path" },
    shrink: { type: "string", value: "N", description: "divide dimensions above 16 by N (default 16)" },
  },
  async run(args, io, signal) {
    const dir = await mkdtemp(join(tmpdir(), "tensormerge-demo-"));
    const say = (s: string) => io.out.write(`${s}\n`);
    const stopIfAsked = () => { if (signal.aborted) throw new MergeError("ABORTED", "the demo was cancelled"); };
    try {
      const layout = shrinkLayout(loadBuiltinLayout("sd15"), Number(stringArg(args, "shrink") ?? 16));
      say(`demo folder: ${dir}`);
      const a = join(dir, "base.safetensors"), b = join(dir, "style.safetensors"), c = join(dir, "sd15.safetensors");
      for (const [path, seed] of [[a, 1], [b, 2], [c, 3]] as const) {
        stopIfAsked();
        const size = await writeSyntheticModel(path, layout, { seed, metadata: { format: "pt" } });
        say(`built ${path}: ${layout.length} tensors (SD 1.5 keys, shrunken shapes), fp32, ${formatBytes(size)}`);
      }
      const out = join(dir, "mix.safetensors");
      say(`\nmerging: add-difference, M = 0.3, fp16 output: mix = base + (style - sd15) * 0.3`);
      const report = await merge({ a, b, c, method: "add-difference", multiplier: 0.3, dtype: "fp16", out, signal });
      printMergeReport(report, io);

      const key = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
      const [va, vb, vc, vr] = await Promise.all([readF32(a, key, 5), readF32(b, key, 5), readF32(c, key, 5), readF32(out, key, 5)]);
      const f = Math.fround;
      const expected = f(va + f(f(vb - vc) * f(0.3)));
      say(`\ncheck ${key}[5]: A=${va.toPrecision(6)} B=${vb.toPrecision(6)} C=${vc.toPrecision(6)}`);
      const agrees = Math.abs(vr - expected) <= Math.abs(expected) * 1e-3 + 1e-7;
      say(`  A + (B-C)*0.3 = ${expected.toPrecision(6)}, in mix (fp16) = ${vr.toPrecision(6)} ${agrees ? "ok" : "MISMATCH"}`);
      if (!agrees) return 1;

      if (nativeAvailable()) {
        // Same file name in another folder: the recipe in the metadata names the output.
        await mkdir(join(dir, "js"));
        const outJs = join(dir, "js", "mix.safetensors");
        const js = await merge({ a, b, c, method: "add-difference", multiplier: 0.3, dtype: "fp16", out: outJs, engine: "js", signal });
        const digest = async (p: string) => createHash("sha256").update(await readFile(p)).digest("hex");
        const same = (await digest(out)) === (await digest(outJs));
        say(`\nTS engine: ${js.seconds.toFixed(2)} s vs native ${report.seconds.toFixed(2)} s; outputs ${same ? "bit-identical" : "DIFFER"}`);
        if (!same) return 1;
      } else {
        say("\nnative addon not available: the TS engine was used (run `npm run build:native`)");
      }
      if (flagArg(args, "keep")) say(`\nkept: ${dir}`);
      return 0;
    } finally {
      if (!flagArg(args, "keep")) await rm(dir, { recursive: true, force: true });
    }
  },
});
