/**
 * Private memory of a mergekit run on full-width Mistral-7B layers: two Hugging Face folders with
 * the real Mistral-7B-v0.1 keys and shapes (bf16, `--layers` of the 32 layers, embedding and
 * lm_head included, 2 shards each, random data), merged by `tensormerge mergekit` in a child
 * process whose private anonymous memory (RssAnon) and peak resident set (VmHWM) are sampled.
 * The output shards (`--shard-size`, default 1GB) are larger than the memory the run holds:
 * nothing collects a shard in RAM. Then the same merge mergekit's way (bench/hf_mergekit_way.py:
 * PyTorch, tensor by tensor, each shard collected in RAM), sampled the same way, in the same run.
 *
 *   node dist/bench/hf-memory.js [--layers 4] [--method slerp|ties|linear] [--shard-size 1GB] [--dir DIR]
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gunzipSync } from "node:zlib";
import { MemorySampler } from "../lib/bench/memory";
import { writeSyntheticModel, type LayoutEntry } from "../lib/synthetic";

const MiB = 1024 ** 2;

function mistralLayout(layers: number): LayoutEntry[] {
  const file = resolve(__dirname, "..", "..", "test", "fixtures", "layouts", "mistral_7b.json.gz");
  const all = JSON.parse(gunzipSync(readFileSync(file)).toString("utf8")) as LayoutEntry[];
  return all.filter(([name]) => Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? -1) < layers);
}

async function writeFolder(dir: string, layout: LayoutEntry[], layers: number, seed: number): Promise<number> {
  // Reused when a finished one is there (the index is written last).
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index) && (JSON.parse(readFileSync(index, "utf8")) as { weight_map: object }).weight_map && Object.keys(JSON.parse(readFileSync(index, "utf8")).weight_map).length === layout.length) {
    return JSON.parse(readFileSync(index, "utf8")).metadata.total_size as number;
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const half = Math.ceil(layout.length / 2);
  const shards = [layout.slice(0, half), layout.slice(half)];
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  for (const [i, shard] of shards.entries()) {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    bytes += await writeSyntheticModel(join(dir, name), shard, { seed: seed * 10 + i, metadata: { format: "pt" } });
    for (const [t] of shard) weightMap[t] = name;
  }
  writeFileSync(join(dir, "config.json"), JSON.stringify({
    architectures: ["MistralForCausalLM"], model_type: "mistral", hidden_size: 4096, intermediate_size: 14336, num_attention_heads: 32,
    num_hidden_layers: layers, num_key_value_heads: 8, vocab_size: 32000, rms_norm_eps: 1e-5, rope_theta: 10000.0, torch_dtype: "bfloat16",
  }));
  writeFileSync(index, JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }));
  return bytes;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { layers: { type: "string" }, method: { type: "string" }, "shard-size": { type: "string" }, dir: { type: "string" } } });
  const layers = Number(values.layers ?? 4);
  const method = values.method ?? "slerp";
  const dir = resolve(values.dir ?? join(process.cwd(), "bench-hf-memory"));
  mkdirSync(dir, { recursive: true });
  const layout = mistralLayout(layers);
  const a = join(dir, "A"), b = join(dir, "B"), out = join(dir, "out");
  rmSync(out, { recursive: true, force: true });
  const sizes = [await writeFolder(a, layout, layers, 1), await writeFolder(b, layout, layers, 2)];
  const config = join(dir, `${method}.yml`);
  const body = method === "slerp" ? `merge_method: slerp\nbase_model: ${a}\nmodels:\n  - model: ${a}\n  - model: ${b}\nparameters:\n  t: [0, 0.5, 1]\n`
    : method === "ties" ? `merge_method: ties\nbase_model: ${a}\nmodels:\n  - model: ${b}\n    parameters: {weight: 1, density: 0.5}\n`
    : `merge_method: linear\nmodels:\n  - model: ${a}\n    parameters: {weight: 1}\n  - model: ${b}\n    parameters: {weight: 1}\n`;
  writeFileSync(config, body);
  const cli = resolve(__dirname, "..", "lib", "cli", "main.js");
  const started = Date.now();
  const child = spawn(process.execPath, [cli, "mergekit", config, out, "--shard-size", values["shard-size"] ?? "1GB", "-q"], { stdio: ["ignore", "pipe", "inherit"] });
  const sampler = new MemorySampler(child.pid!, 10);
  sampler.start();
  let stdout = "";
  child.stdout.on("data", (d) => (stdout += d));
  const code = await new Promise<number>((res) => child.on("exit", (c) => res(c ?? 1)));
  const peak = sampler.stop();
  if (code !== 0) throw new Error(`mergekit exited with ${code}`);
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(stdout);
  process.stdout.write(`${method}, ${layers} Mistral-7B layers (bf16): inputs ${(sizes[0]! / MiB).toFixed(0)} + ${(sizes[1]! / MiB).toFixed(0)} MiB, ${seconds.toFixed(1)} s\n`);
  process.stdout.write(`peak private memory (RssAnon, sampled every 10 ms) ${((peak.anon ?? 0) / MiB).toFixed(1)} MiB; peak resident set (VmHWM, mapped inputs included) ${((peak.hwm ?? 0) / MiB).toFixed(1)} MiB\n`);
  if (method === "linear") return;
  // The same merge mergekit's way (PyTorch, each output shard collected in RAM), in the same run.
  const way = join(dir, "out-mergekit-way");
  rmSync(way, { recursive: true, force: true });
  const script = resolve(__dirname, "..", "..", "bench", "hf_mergekit_way.py");
  const pyStarted = Date.now();
  const py = spawn("/usr/bin/python3", [script, method, a, b, way, String(1e9)], { stdio: ["ignore", "ignore", "pipe"] });
  // Its per-tensor "progress" lines are for bench/hf-llm.ts's time limit; show only the rest.
  py.stderr.on("data", (d: Buffer) => process.stderr.write(d.toString().split("\n").filter((l) => l && !l.startsWith("progress ")).map((l) => `${l}\n`).join("")));
  const pySampler = new MemorySampler(py.pid!, 10);
  pySampler.start();
  const pyCode = await new Promise<number>((res) => py.on("exit", (c) => res(c ?? 1)));
  const pyPeak = pySampler.stop();
  if (pyCode !== 0) {
    process.stdout.write(`mergekit's way (PyTorch) did not finish (exit ${pyCode}; python3-torch missing?)\n`);
    return;
  }
  const pySeconds = (Date.now() - pyStarted) / 1000;
  process.stdout.write(`mergekit's way (PyTorch, shards in RAM): ${pySeconds.toFixed(1)} s, peak private memory ${((pyPeak.anon ?? 0) / MiB).toFixed(1)} MiB; tensormerge took ${(seconds / pySeconds).toFixed(2)}× its time and ${((peak.anon ?? 0) / (pyPeak.anon ?? 1)).toFixed(3)}× its private memory\n`);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
});
