/** Hugging Face folders as inputs: one logical model over its shards, the index checked defensively, the architecture from config.json. */
import { strict as assert } from "node:assert";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { assertLlmCompatible, identifyLlm } from "../../lib/hf/architecture";
import { openHfFolder } from "../../lib/hf/folder";
import { inspectHfFolder, formatHfInspectReport } from "../../lib/hf/inspect";
import { tempDir, writeModel } from "../helpers/models";
import { llmLayout, writeLlmFolder } from "./fixtures";

describe("hf: model folders as inputs", () => {
  const tmp = tempDir("tm-hf-folder-");
  after(() => tmp.cleanup());

  it("opens a sharded Mistral folder as one model whose tensors are read from their own shards", async () => {
    const dir = tmp.fresh("mistral");
    const stored = writeLlmFolder(dir, { family: "mistral", layers: 3, seed: 1, shards: 3 });
    const hf = await openHfFolder(dir);
    assert.equal(hf.shards.length, 3);
    assert.equal(hf.model.tensors.length, stored.size);
    const index = JSON.parse(readFileSync(join(dir, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
    for (const t of hf.model.tensors) {
      const file = hf.model.parts!.fileOf.get(t.name)!;
      assert.equal(file.path, join(dir, index.weight_map[t.name]!), t.name);
      // The offset is the shard's: the bytes there are the stored values.
      const bytes = readFileSync(file.path).subarray(t.offset, t.offset + t.byteLength);
      assert.equal(bytes.length, stored.get(t.name)!.values.length * 2);
    }
    const id = identifyLlm(hf.model, hf.config);
    assert.deepEqual([id.family, id.layers, id.hiddenSize, id.heads, id.kvHeads, id.vocabSize, id.intermediateSize], ["mistral", 3, 16, 4, 2, 32, 24]);
  });

  it("reads model.safetensors without an index", async () => {
    const dir = tmp.fresh("single");
    writeLlmFolder(dir, { family: "qwen2", layers: 2, seed: 2, shards: 1 });
    const hf = await openHfFolder(dir);
    assert.equal(hf.shards.length, 1);
    assert.equal(identifyLlm(hf.model, hf.config).family, "qwen2");
  });

  it("identifies llama, mistral, qwen2, phi3 and gemma from the keys when there is no config.json", async () => {
    for (const family of ["llama", "qwen2"] as const) {
      const dir = tmp.fresh(family);
      writeLlmFolder(dir, { family, layers: 2, seed: 3 });
      rmSync(join(dir, "config.json"));
      const hf = await openHfFolder(dir);
      const id = identifyLlm(hf.model, hf.config);
      assert.equal(id.family, family);
      assert.equal(id.fromConfig, false);
      assert.equal(id.layers, 2);
      assert.ok(hf.notes.some((n) => n.includes("config.json")));
    }
    const phi = tmp.fresh("phi3");
    writeModel(join(phi, "model.safetensors"), {
      "model.embed_tokens.weight": { dtype: "F32", shape: [8, 4] },
      "model.layers.0.self_attn.qkv_proj.weight": { dtype: "F32", shape: [12, 4] },
      "model.layers.0.mlp.gate_up_proj.weight": { dtype: "F32", shape: [16, 4] },
    });
    assert.equal(identifyLlm((await openHfFolder(phi)).model, undefined).family, "phi3");
    const gemma = tmp.fresh("gemma");
    writeModel(join(gemma, "model.safetensors"), {
      "model.embed_tokens.weight": { dtype: "F32", shape: [8, 4] },
      "model.layers.0.mlp.gate_proj.weight": { dtype: "F32", shape: [6, 4] },
      "model.layers.0.self_attn.q_proj.weight": { dtype: "F32", shape: [4, 4] },
    });
    const g = identifyLlm((await openHfFolder(gemma)).model, undefined);
    assert.equal(g.family, "gemma");
    assert.equal(g.tiedEmbeddings, true);
  });

  describe("refuses a bad index, naming the problem", () => {
    const broken = async (edit: (index: { metadata: { total_size: unknown }; weight_map: Record<string, unknown> }, dir: string) => void, code: string, mention: string) => {
      const dir = tmp.fresh("broken");
      writeLlmFolder(dir, { family: "llama", layers: 2, seed: 4, shards: 2 });
      const path = join(dir, "model.safetensors.index.json");
      const index = JSON.parse(readFileSync(path, "utf8"));
      edit(index, dir);
      writeFileSync(path, JSON.stringify(index));
      await assert.rejects(openHfFolder(dir), (e: { code: string; message: string }) => e.code === code && e.message.includes(mention));
    };
    it("a shard outside the folder", () => broken((i) => { i.weight_map["lm_head.weight"] = "../elsewhere.safetensors"; }, "MODEL_FOLDER_INVALID", "not a plain file name"));
    it("a shard that is missing", () => broken((_, dir) => renameSync(join(dir, "model-00002-of-00002.safetensors"), join(dir, "gone")), "MODEL_FOLDER_INVALID", "model-00002-of-00002.safetensors"));
    it("a tensor mapped to the wrong shard", () => broken((i) => { i.weight_map["model.embed_tokens.weight"] = "model-00002-of-00002.safetensors"; }, "MODEL_FOLDER_INVALID", "model.embed_tokens.weight"));
    it("a mapped tensor no shard holds", () => broken((i) => { i.weight_map["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"; }, "MODEL_FOLDER_INVALID", "model.layers.9.mlp.up_proj.weight"));
    it("a shard tensor the index leaves out", () => broken((i) => { delete i.weight_map["model.norm.weight"]; }, "MODEL_FOLDER_INVALID", "model.norm.weight"));
    it("a total_size that is not a size", () => broken((i) => { i.metadata.total_size = -5; }, "MODEL_FOLDER_INVALID", "total_size"));
    it("a weight_map that is not an object", () => broken((i) => { (i as { weight_map: unknown }).weight_map = ["x"]; }, "MODEL_FOLDER_INVALID", "weight_map"));
  });

  it("refuses a tensor stored in two shards (DUPLICATE_TENSOR)", async () => {
    const dir = tmp.fresh("dup");
    writeLlmFolder(dir, { family: "llama", layers: 1, seed: 5, shards: 2 });
    // Shard 2 gets a copy of shard 1's first tensor too.
    const one = join(dir, "model-00001-of-00002.safetensors");
    const buf = readFileSync(one);
    const first = Object.keys(JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString()) as object).find((k) => k !== "__metadata__")!;
    writeModel(join(dir, "model-00002-of-00002.safetensors"), { [first]: { dtype: "BF16", shape: [1] }, "lm_head.weight": { dtype: "BF16", shape: [32, 16] } });
    await assert.rejects(openHfFolder(dir), (e: { code: string; tensor: string }) => e.code === "DUPLICATE_TENSOR" && e.tensor === first);
  });

  it("notes a total_size that differs from the data (published Llama-2 indexes carry the .bin size)", async () => {
    const dir = tmp.fresh("llama-total");
    writeLlmFolder(dir, { family: "llama", layers: 1, seed: 6, shards: 2 });
    const path = join(dir, "model.safetensors.index.json");
    const index = JSON.parse(readFileSync(path, "utf8"));
    index.metadata.total_size += 4096;
    writeFileSync(path, JSON.stringify(index));
    const hf = await openHfFolder(dir);
    assert.ok(hf.notes.some((n) => n.includes("total_size")));
  });

  it("refuses a config.json whose sizes the weights contradict, naming the field", async () => {
    const dir = tmp.fresh("liar");
    writeLlmFolder(dir, { family: "mistral", layers: 2, seed: 7, config: { num_hidden_layers: 3 } });
    const hf = await openHfFolder(dir);
    assert.throws(() => identifyLlm(hf.model, hf.config), (e: { code: string; message: string }) => e.code === "MODEL_FOLDER_INVALID" && e.message.includes("num_hidden_layers"));
    const dir2 = tmp.fresh("liar-vocab");
    writeLlmFolder(dir2, { family: "mistral", layers: 2, seed: 7, config: { vocab_size: 33 } });
    const hf2 = await openHfFolder(dir2);
    assert.throws(() => identifyLlm(hf2.model, hf2.config), (e: { message: string }) => e.message.includes("vocab_size"));
  });

  it("refuses models that differ, naming the config field; a vocabulary mismatch says so", async () => {
    const open = async (family: "mistral" | "llama", extra: Record<string, unknown>, seed: number) => {
      const dir = tmp.fresh("cmp");
      writeLlmFolder(dir, { family, layers: 2, seed, config: extra });
      const hf = await openHfFolder(dir);
      return { label: dir, id: identifyLlm(hf.model, hf.config) };
    };
    const base = await open("mistral", {}, 8);
    const heads = await open("mistral", { num_attention_heads: 8 }, 9);
    assert.throws(() => assertLlmCompatible([base, heads]), (e: { code: string; message: string }) => e.code === "ARCHITECTURE_MISMATCH" && e.message.startsWith("num_attention_heads differs"));
    const llama = await open("llama", {}, 10);
    assert.throws(() => assertLlmCompatible([base, llama]), (e: { message: string }) => e.message.startsWith("model_type differs"));
    const vocabA = { label: "a", id: { ...base.id, vocabSize: 32000 } };
    const vocabB = { label: "b", id: { ...base.id, vocabSize: 32002 } };
    assert.throws(() => assertLlmCompatible([vocabA, vocabB]), (e: { code: string; message: string }) => e.code === "ARCHITECTURE_MISMATCH" && /vocab_size differs.*32000.*32002.*vocabular/.test(e.message));
    assertLlmCompatible([base, { label: "deeper", id: { ...base.id, layers: 5 } }], true); // slices: depth may differ
  });

  it("inspect reports family, layers, dtype and shards", async () => {
    const dir = tmp.fresh("inspect");
    writeLlmFolder(dir, { family: "qwen2", layers: 3, seed: 11, shards: 2 });
    const r = await inspectHfFolder(dir);
    assert.equal(r.llm!.family, "qwen2");
    assert.equal(r.llm!.layers, 3);
    assert.equal(r.shards.length, 2);
    assert.equal(r.tensorCount, llmLayout("qwen2", 3).length);
    assert.deepEqual(r.dtypes.map((d) => d.dtype), ["BF16"]);
    const text = formatHfInspectReport(r);
    for (const s of ["qwen2", "3 layers", "model-00002-of-00002.safetensors", "BF16", "vocabulary 40"]) assert.ok(text.includes(s), s);
  });
});
