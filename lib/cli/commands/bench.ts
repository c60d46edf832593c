/** `tensormerge bench`: native engine vs TS engine vs the I/O floor, on your own models. */
import { runUserBench, formatUserBench } from "../../bench/user-bench";
import { MergeError } from "../../errors";
import type { MethodName } from "../../methods/registry";
import type { OutputDtype } from "../../dtypes";
import { defineCommand, flagArg, stringArg } from "../command";

export const benchCommand = defineCommand({
  name: "bench",
  summary: "measure the native engine, the TS engine and the plain I/O floor on your models (about a minute; outputs are deleted)",
  usage: "bench --a A [--b B] [--c C] [options]",
  options: {
    a: { type: "string", value: "FILE", description: "model A" },
    b: { type: "string", value: "FILE", description: "model B (weighted-sum by default)" },
    c: { type: "string", value: "FILE", description: "model C (add-difference by default)" },
    method: { type: "string", short: "m", value: "METHOD", description: "merge method (default from the models given)" },
    multiplier: { type: "string", short: "M", value: "M", description: "multiplier (default 0.5)" },
    dtype: { type: "string", value: "TYPE", description: "output type: fp16 (default), bf16, fp32, fp8-e4m3, fp8-e5m2, same" },
    engines: { type: "string", value: "LIST", description: "native,js (default: both when the addon loads)" },
    seconds: { type: "string", value: "S", description: "time budget per run; longer runs are stopped and extrapolated (default 20)" },
    threads: { type: "string", value: "N", description: "native engine threads (default: all cores)" },
    tmp: { type: "string", value: "DIR", description: "where the temporary outputs go (default: the system temp folder; use the disk you merge on)" },
    "no-warm": { type: "boolean", description: "do not read the inputs before each run" },
    json: { type: "boolean", description: "print the result as JSON" },
  },
  async run(args, io, signal) {
    const a = stringArg(args, "a");
    if (!a) throw new MergeError("INVALID_ARGUMENT", "bench needs --a (and --b, --c for two- and three-model methods)");
    const num = (name: string) => {
      const v = stringArg(args, name);
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || n <= 0) throw new MergeError("INVALID_ARGUMENT", `Expected a positive number for --${name} but received ${v}`);
      return n;
    };
    const engines = stringArg(args, "engines")?.split(",").map((e) => {
      if (e !== "native" && e !== "js") throw new MergeError("INVALID_ARGUMENT", `Expected native or js in --engines but received ${e}`);
      return e;
    });
    const seconds = num("seconds"), threads = num("threads"), multiplier = stringArg(args, "multiplier");
    const json = flagArg(args, "json");
    const result = await runUserBench({
      a,
      ...(stringArg(args, "b") ? { b: stringArg(args, "b")! } : {}),
      ...(stringArg(args, "c") ? { c: stringArg(args, "c")! } : {}),
      ...(stringArg(args, "method") ? { method: stringArg(args, "method") as MethodName } : {}),
      ...(multiplier !== undefined ? { multiplier: Number(multiplier) } : {}),
      ...(stringArg(args, "dtype") ? { dtype: stringArg(args, "dtype") as OutputDtype | "same" } : {}),
      ...(engines ? { engines } : {}),
      ...(seconds !== undefined ? { seconds } : {}),
      ...(threads !== undefined ? { threads } : {}),
      ...(stringArg(args, "tmp") ? { tmp: stringArg(args, "tmp")! } : {}),
      ...(flagArg(args, "no-warm") ? { warm: false } : {}),
      ...(json ? {} : { log: (line: string) => io.err.write(`${line}\n`) }),
      signal,
    });
    io.out.write(json ? `${JSON.stringify(result, null, 1)}\n` : formatUserBench(result));
    return 0;
  },
});
