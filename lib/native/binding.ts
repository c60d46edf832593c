/**
 * Loads the native engine (build/Release/tensormerge.node or a prebuild) and wraps its two
 * entry points. Loading happens once, on first use; every failure is collected into a single
 * MergeError("NATIVE_UNAVAILABLE") that lists what was tried and how to fix it.
 *
 * Search order:
 * 1. `TENSORMERGE_NATIVE=/path/to/tensormerge.node`, if set (and then nothing else: an explicit
 *    choice that fails is an error, not a reason to pick another binary);
 * 2. node-gyp-build from the package root: `build/Release`, `build/Debug`, then
 *    `prebuilds/<platform>-<arch>/` (a local build shadows the prebuild, so
 *    `npm run build:native` always takes effect).
 *
 * @example
 * import { nativeAvailable, runNativeJob } from "./native/binding";
 * if (nativeAvailable()) { const result = await runNativeJob(job); console.log(result.isa); }
 */
import * as fs from "fs";
import * as path from "path";
import { ERROR_CODES, MergeError, type ErrorCode } from "../errors";
import type { Job, JobResult } from "./job";

/** What the addon reports about the machine and itself. */
export interface NativeCapabilities {
  /** Kernel sets this CPU and build can run, e.g. ["scalar", "avx2", "avx512"]. */
  isas: string[];
  /** The set `isa: "auto"` picks. */
  best: string;
  /** Raw CPU/OS feature flags (avx2, f16c, avx512f, avx512bw, avx512vl, osYmm, osZmm...). */
  cpu: Record<string, boolean>;
  /** Kernel names by id, as compiled (must equal KERNELS in job.ts). */
  kernels: string[];
  /** Dtype names by id, as compiled (must equal DTYPES in dtypes.ts). */
  dtypes: string[];
  /** Error codes, as compiled (must equal ERROR_CODES in errors.ts). */
  errorCodes: string[];
}

/** The raw addon interface. Prefer runNativeJob(), which maps errors to MergeError. */
export interface NativeBinding {
  /** Runs a job on a libuv worker; rejects with an Error carrying `code`, `path`, `tensor`. */
  runJob(job: Job): Promise<JobResult>;
  capabilities(): NativeCapabilities;
  /** Pools and faults in the output window buffers of a job about to run (absent from addons built before it). */
  prepareOutputBuffers?(maxOutputBytes: number): Promise<number>;
  /** Empties that pool. */
  discardOutputBuffers?(): void;
}

interface LoadState {
  binding?: NativeBinding;
  error?: MergeError;
}

let state: LoadState | undefined;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message.split("\n")[0]! : String(err);
}

/** The directory holding tensormerge's package.json (works from lib/ and from dist/lib/). */
function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { name?: string };
      if (pkg.name === "tensormerge") return dir;
    } catch {
      // no package.json here: keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(__dirname, "..", "..");
    dir = parent;
  }
}

function asBinding(mod: unknown, file: string): NativeBinding {
  const m = mod as Partial<NativeBinding> | null;
  if (!m || typeof m.runJob !== "function" || typeof m.capabilities !== "function") {
    throw new Error(`${file} is not the tensormerge addon (no runJob/capabilities exports)`);
  }
  return m as NativeBinding;
}

function load(): LoadState {
  const tried: string[] = [];
  const explicit = process.env.TENSORMERGE_NATIVE;
  if (explicit) {
    const file = path.resolve(explicit);
    try {
      return { binding: asBinding(require(file), file) };
    } catch (err) {
      tried.push(`TENSORMERGE_NATIVE=${explicit}: ${messageOf(err)}`);
    }
  } else {
    const root = packageRoot();
    let file: string | undefined;
    try {
      const nodeGypBuild = require("node-gyp-build") as { resolve(dir: string): string };
      file = nodeGypBuild.resolve(root);
    } catch (err) {
      tried.push(`node-gyp-build in ${root} (build/Release, build/Debug, prebuilds/${process.platform}-${process.arch}): ${messageOf(err)}`);
    }
    if (file !== undefined) {
      try {
        return { binding: asBinding(require(file), file) };
      } catch (err) {
        tried.push(`${file}: ${messageOf(err)}`);
      }
    }
  }
  // One line, as every CLI error: what was tried, then the fix.
  const message =
    `the native engine is not available (tried: ${tried.join("; ")}); ` +
    "run `npm run build:native` (needs cmake and a C++17 compiler), or set TENSORMERGE_NATIVE to a built tensormerge.node";
  return { error: new MergeError("NATIVE_UNAVAILABLE", message) };
}

/**
 * The addon, or undefined when it cannot be loaded (see nativeLoadError() for why).
 * @example const native = loadNative(); if (native) console.log(native.capabilities().best);
 */
export function loadNative(): NativeBinding | undefined {
  state ??= load();
  return state.binding;
}

/** Whether the native engine can be used. @example if (!nativeAvailable()) useTsEngine(); */
export function nativeAvailable(): boolean {
  return loadNative() !== undefined;
}

/** Why the addon could not be loaded (a NATIVE_UNAVAILABLE MergeError), or undefined if it loaded. */
export function nativeLoadError(): MergeError | undefined {
  loadNative();
  return state?.error;
}

/** The addon, or throws the NATIVE_UNAVAILABLE MergeError. */
export function requireNative(): NativeBinding {
  const binding = loadNative();
  if (!binding) throw state!.error!;
  return binding;
}

function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && (ERROR_CODES as readonly string[]).includes(code);
}

/** Converts an addon error into a MergeError, keeping code/path/tensor and the caller's stack. */
function toMergeError(err: unknown, callerStack: string | undefined): MergeError {
  if (err instanceof MergeError) return err;
  const e = err as { message?: unknown; code?: unknown; path?: unknown; tensor?: unknown } | null;
  const code: ErrorCode = isErrorCode(e?.code) ? e!.code : "INTERNAL";
  const message = typeof e?.message === "string" ? e.message : String(err);
  const context: { path?: string; tensor?: string; cause: unknown } = { cause: err };
  if (typeof e?.path === "string") context.path = e.path;
  if (typeof e?.tensor === "string") context.tensor = e.tensor;
  const merged = new MergeError(code, message, context);
  if (callerStack) {
    // The native failure happened on another thread: show where the caller started the job.
    merged.stack = `${merged.name}: ${merged.message}\n${callerStack.split("\n").slice(1).join("\n")}`;
  }
  return merged;
}

/**
 * Runs a job on the native engine. Rejects with a MergeError: NATIVE_UNAVAILABLE if the addon
 * cannot be loaded, INVALID_ARGUMENT / INVALID_OFFSET / DTYPE_UNSUPPORTED / SIZE_MISMATCH for a
 * job the engine refuses, FILE_NOT_FOUND / OUTPUT_EXISTS / DISK_FULL / IO_ERROR for file
 * problems, FILE_TRUNCATED when an input shrank under the engine's reads, INPUT_CHANGED when an
 * input's size or mtime changed by the end, ABORTED when `control[0]` was set. On failure no
 * output file is left behind.
 *
 * @example
 * const control = new Float64Array(3);
 * const result = await runNativeJob({ ...job, control });
 * console.log(result.bytesWritten, result.isa, result.crc32);
 */
export async function runNativeJob(job: Job): Promise<JobResult> {
  const callerStack = new Error().stack;
  try {
    return await requireNative().runJob(job);
  } catch (err) {
    throw toMergeError(err, callerStack);
  }
}

/**
 * Starts faulting in, on a libuv worker, the output window buffers of a native job about to be
 * planned whose largest output has about `maxOutputBytes` (native/core/buffer_pool.h: on VMs
 * that hand freed memory back to the host a fresh page costs a host fault, and the engine's
 * first windows paid it on the critical path). The job takes them when it starts; the end of
 * any job empties the pool. Advice only: never throws, never waits; without the addon (or with
 * an older one) it does nothing. TENSORMERGE_PREFAULT_BUFFERS=0 turns it off.
 */
export function prepareOutputBuffers(maxOutputBytes: number): void {
  const binding = loadNative();
  if (!binding || typeof binding.prepareOutputBuffers !== "function") return;
  try {
    binding.prepareOutputBuffers(maxOutputBytes).catch(() => {});
  } catch {
    // advice only
  }
}

/** Empties the pool of prepareOutputBuffers (a job that was planned but did not run). */
export function discardOutputBuffers(): void {
  const binding = loadNative();
  if (binding && typeof binding.discardOutputBuffers === "function") binding.discardOutputBuffers();
}

/**
 * The addon's view of the machine; throws NATIVE_UNAVAILABLE if it cannot be loaded.
 * @example capabilities().isas.includes("avx512")
 */
export function capabilities(): NativeCapabilities {
  return requireNative().capabilities();
}
