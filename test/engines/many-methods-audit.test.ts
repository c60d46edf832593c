/**
 * Gaps found auditing issue 11 ("native vs TS bit-identical across thread counts, window sizes
 * (the tuning knobs) and forced ISAs") against the suite (/work/notes/audit-10-11.md):
 * - slerp, slerp-mecha, add-cosine-a/b and plain dare at every forced ISA the CPU has, threads
 *   1 and 2, default and 1 MiB windows, fp16 and bf16 inputs written as fp8 (the ISA's
 *   conversion kernels feed the statistics), against the TS engine at threads 1 and 2;
 * - every engine knob the benchmarks turn (input release modes, drop-behind, no prefetch,
 *   buffered writes, outputs one after another) on a ties λ sweep (two outputs sharing each
 *   tensor's statistics) and dare-ties, with 1 MiB windows cutting through the tensors:
 *   releasing input pages between a tensor's statistics and its writes must not change a bit.
 */
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { nativeAvailable } from "../../lib/engine";
import { merge } from "../../lib/merge";
import { capabilities } from "../../lib/native/binding";
import { setEngineKnobs, setOnlyTuningKnobs } from "../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";

const KNOBS: Record<string, string>[] = [
  {},
  { TENSORMERGE_RELEASE_INPUTS: "0" },
  { TENSORMERGE_RELEASE_INPUTS: "1" },
  { TENSORMERGE_RELEASE_INPUTS: "2" },
  { TENSORMERGE_RELEASE_INPUTS: "3" },
  { TENSORMERGE_RELEASE_INPUTS: "3", TENSORMERGE_PREFETCH: "0" },
  { TENSORMERGE_DIRECT_IO: "0", TENSORMERGE_RELEASE_INPUTS: "3" },
  { TENSORMERGE_INTERLEAVE: "0" },
];

/** A [rows, cols] tensor over 1 MiB (several windows), a 1-D one, an odd small one; fp16 or bf16. */
function writeModelOf(path: string, seed: number, dtype: "F16" | "BF16"): void {
  const tensors: Record<string, TestTensor> = {};
  const shapes: Record<string, number[]> = {
    "model.diffusion_model.middle_block.1.proj_in.weight": [700, 641],
    "model.diffusion_model.out.0.weight": [300_007],
    "model.diffusion_model.input_blocks.1.0.emb_layers.1.weight": [17, 3],
  };
  let s = seed;
  for (const [name, shape] of Object.entries(shapes)) tensors[name] = { dtype, shape, values: randomValues(shape.reduce((p, q) => p * q, 1), s++) };
  writeModel(path, tensors);
}

describe("audit: many-model methods, every ISA and every engine knob equal the TS engine", function () {
  this.timeout(600_000);
  let dir: ReturnType<typeof tempDir>;
  const paths: Record<string, string[]> = {};
  let restore = () => {};
  before(function () {
    if (!nativeAvailable()) this.skip();
    dir = tempDir("tm-many-isa-");
    for (const dtype of ["F16", "BF16"] as const) paths[dtype] = [0, 1, 2].map((m) => {
      const p = join(dir.path, `${dtype}-${m}.safetensors`);
      writeModelOf(p, 100 * m + (dtype === "F16" ? 1 : 7), dtype);
      return p;
    });
  });
  after(() => {
    restore();
    dir?.cleanup();
  });

  const isas = () => (["scalar", "avx2", "avx512"] as const).filter((isa) => capabilities().isas.includes(isa));
  const cases: { method: string; many?: boolean; options: Record<string, unknown> }[] = [
    { method: "slerp", options: { multiplier: 0.35 } },
    { method: "slerp-mecha", options: { multiplier: 0.8 } },
    { method: "add-cosine-a", options: { multiplier: 0.2 } },
    { method: "add-cosine-b", options: { multiplier: 1.1 } },
    { method: "dare", many: true, options: { params: { "drop-rate": 0.45, seed: 31 }, modelWeights: [0.7, 1.2] } },
  ];
  for (const c of cases) {
    for (const dtype of ["F16", "BF16"] as const) {
      it(`${c.method}, ${dtype} → fp8-e4m3: native at every ISA, threads 1/2, default and 1 MiB windows = TS at threads 1/2`, async () => {
        const [p0, p1, p2] = paths[dtype]!;
        const inputs = c.many ? { base: p0, models: [p1, p2] } : { a: p0, b: p1 };
        const run = async (tag: string, extra: Record<string, unknown>) => {
          const out = join(dir.path, `${c.method}-${dtype}-${tag}.safetensors`);
          await merge({ recipeMetadata: false, method: c.method, ...inputs, ...c.options, dtype: "fp8-e4m3", out, ...extra } as never);
          return readFileSync(out);
        };
        const expected = await run("js-1", { engine: "js", threads: 1 });
        assert.ok((await run("js-2", { engine: "js", threads: 2 })).equals(expected), "TS threads=2");
        for (const isa of isas()) {
          for (const threads of [1, 2]) {
            for (const windowMib of [undefined, "1"]) {
              restore();
              restore = setEngineKnobs({ TENSORMERGE_WINDOW_MIB: windowMib });
              assert.ok((await run(`${isa}-${threads}-${windowMib ?? "d"}`, { engine: "native", isa, threads })).equals(expected), `${isa} threads=${threads} window=${windowMib ?? "default"}`);
            }
          }
        }
        restore();
        restore = () => {};
      });
    }
  }

  for (const c of [
    { method: "ties", options: { params: { density: 0.3 }, modelWeights: [1, 0.6], multiplier: [0.5, 1.25] } },
    { method: "dare-ties", options: { params: { "drop-rate": 0.7, seed: 8 } } },
  ]) {
    it(`${c.method}: every engine knob, threads 1 and 2, equals the TS engine`, async () => {
      const [p0, p1, p2] = paths.F16!;
      const outputs = (tag: string) => join(dir.path, `${c.method}-knobs-${tag}-<M>.safetensors`);
      const multipliers = Array.isArray(c.options.multiplier) ? c.options.multiplier : [undefined];
      const read = (tag: string) => multipliers.map((m) => readFileSync(m === undefined ? outputs(tag).replace("-<M>", "") : outputs(tag).replace("<M>", String(m))));
      const run = (tag: string, extra: Record<string, unknown>) =>
        merge({ recipeMetadata: false, method: c.method, base: p0, models: [p1, p2], ...c.options, dtype: "fp16", out: multipliers[0] === undefined ? outputs(tag).replace("-<M>", "") : outputs(tag), ...extra } as never);
      await run("js", { engine: "js", threads: 1 });
      const expected = read("js");
      for (const [k, knobs] of KNOBS.entries()) {
        restore();
        restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...knobs });
        for (const threads of [1, 2]) {
          await run(`native-${k}-${threads}`, { engine: "native", threads });
          read(`native-${k}-${threads}`).forEach((bytes, i) => assert.ok(bytes.equals(expected[i]!), `${JSON.stringify(knobs)}, ${threads} thread(s), output ${i + 1}`));
        }
      }
      restore();
      restore = () => {};
    });
  }
});
