/**
 * reproduce() and `tensormerge reproduce` on a baked model: the checkpoint and the LoRAs found
 * by sha256 in the model folder (renamed files too), the rebuilt file the same bytes as the bake
 * (compared here with Buffer.equals); a LoRA missing from the folders is MODEL_NOT_FOUND naming it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { MergeError } from "../../lib/errors";
import { BAKE_METADATA_KEY, bake } from "../../lib/lora/bake";
import { reproduce } from "../../lib/recipes/reproduce";
import { readModel, tempDir, writeModel, randomValues, type TestTensor } from "../helpers/models";
import { loraEntries, writeBase, writeLora } from "./fixtures";

const CLI = join(__dirname, "../../lib/cli/main.js");
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("lora: reproduce a baked model", function () {
  this.timeout(120_000);
  const tmp = tempDir("tm-lora-repro-");
  const lib = join(tmp.path, "lib"), made = join(tmp.path, "made");
  const baked = join(made, "baked.safetensors");
  const files = { base: join(lib, "sd15.safetensors"), kohya: join(lib, "detail.safetensors"), tucker: join(lib, "tucker.safetensors") };
  before(async () => {
    mkdirSync(lib);
    mkdirSync(made);
    await writeBase(files.base, "sd15", 32);
    writeLora(files.kohya, loraEntries("lora_sd15_kohya_r32", 32), 5, () => 8);
    // a Tucker LoCon module too: its factor file must not change the rebuilt bytes
    const w = readModel(files.base).tensors.get("model.diffusion_model.input_blocks.1.0.in_layers.2.weight")!.shape;
    const t = (shape: number[], seed: number): TestTensor => ({ dtype: "F16", shape, values: randomValues(shape.reduce((a, b) => a * b, 1), seed) });
    const n = "lora_unet_down_blocks_0_resnets_0_conv1";
    writeModel(files.tucker, { [`${n}.lora_up.weight`]: t([w[0]!, 4, 1, 1], 1), [`${n}.lora_mid.weight`]: t([4, 4, 3, 3], 2), [`${n}.lora_down.weight`]: t([4, w[1]!, 1, 1], 3) });
    await bake({
      model: files.base, loras: [{ path: files.kohya, ratio: 0.7, te: 0.3 }, { path: files.tucker, ratio: -0.4 }],
      loraBlocks: "1,0.5,0.5,0.5,0.5,0.5,0.5,1,1,1,1,1,1,1,1,1,0", dtype: "fp16", metadata: { author: "someone" }, out: baked,
    });
  });
  after(() => tmp.cleanup());

  it("records the checkpoint and the LoRAs by sha256 with their ratios", () => {
    const record = JSON.parse(readModel(baked).metadata[BAKE_METADATA_KEY]!);
    assert.equal(record.model.sha256, sha256(files.base));
    assert.deepEqual(record.loras.map((l: { sha256: string; ratio: number; te: number }) => [l.sha256, l.ratio, l.te]), [[sha256(files.kohya), 0.7, 0.3], [sha256(files.tucker), -0.4, -0.4]]);
    assert.equal(readModel(baked).metadata.author, "someone");
  });

  it("rebuilds the same bytes from files found by sha256 (renamed), with either engine", async () => {
    // the folder's files renamed: found by hash, not by name
    const renamed = join(tmp.path, "renamed");
    mkdirSync(renamed);
    copyFileSync(files.base, join(renamed, "checkpoint.safetensors"));
    copyFileSync(files.kohya, join(renamed, "a.safetensors"));
    copyFileSync(files.tucker, join(renamed, "b.safetensors"));
    for (const engine of ["native", "js"] as const) {
      const out = join(tmp.path, `rebuilt-${engine}.safetensors`);
      const r = await reproduce(baked, { modelDirs: [renamed], out, hashCache: null, engine });
      assert.equal(r.kind, "bake");
      assert.equal(r.identical, true);
      assert.ok(readFileSync(out).equals(readFileSync(baked)));
    }
  });

  it("a LoRA in no model folder: MODEL_NOT_FOUND naming it, nothing written", async () => {
    const partial = join(tmp.path, "partial");
    mkdirSync(partial);
    copyFileSync(files.base, join(partial, "sd15.safetensors"));
    copyFileSync(files.kohya, join(partial, "detail.safetensors"));
    const out = join(tmp.path, "never.safetensors");
    await assert.rejects(reproduce(baked, { modelDirs: [partial], out, hashCache: null }), (e: unknown) => {
      assert.ok(e instanceof MergeError);
      assert.equal(e.code, "MODEL_NOT_FOUND");
      assert.match(e.message, /tucker\.safetensors/);
      assert.match(e.message, new RegExp(sha256(files.tucker)));
      return true;
    });
    assert.throws(() => readFileSync(out));
  });

  it("tensormerge reproduce rebuilds it and says identical; --dry-run lists the LoRAs; --print-recipe prints the bake record", () => {
    const out = join(tmp.path, "cli.safetensors");
    const dry = spawnSync(process.execPath, [CLI, "reproduce", baked, "--model-dir", lib, "--out", out, "--dry-run"], { encoding: "utf8" });
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /LoRA 2: .*tucker\.safetensors \(ratio -0\.4/);
    const r = spawnSync(process.execPath, [CLI, "reproduce", baked, "--model-dir", lib, "--out", out, "-q"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /identical/);
    assert.ok(readFileSync(out).equals(readFileSync(baked)));
    renameSync(out, `${out}.seen`);
    const printed = spawnSync(process.execPath, [CLI, "reproduce", baked, "--print-recipe"], { encoding: "utf8" });
    assert.equal(printed.status, 0, printed.stderr);
    const record = JSON.parse(printed.stdout) as { model: { sha256: string }; loras: { sha256: string }[] };
    assert.equal(record.model.sha256, sha256(files.base));
    assert.deepEqual(record.loras.map((l) => l.sha256), [sha256(files.kohya), sha256(files.tucker)]);
  });
});
