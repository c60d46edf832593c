/**
 * The one error type of tensormerge. `code` is stable (tests and callers switch on it);
 * the message is for people. Context goes in fields, not only in the text.
 *
 * @example
 * try { await merge(opts) } catch (e) { if (e instanceof MergeError && e.code === "SHAPE_MISMATCH") … }
 */
export const ERROR_CODES = [
  // safetensors / file format
  "FILE_TOO_SMALL",
  "HEADER_TOO_LARGE",
  "HEADER_NOT_UTF8",
  "HEADER_NOT_JSON",
  "HEADER_INVALID",
  "METADATA_INVALID",
  "DTYPE_UNSUPPORTED",
  "SHAPE_INVALID",
  "INVALID_OFFSET",
  "SIZE_MISMATCH",
  "TRAILING_BYTES",
  "FILE_TRUNCATED",
  "SIZE_OVERFLOW",
  "DUPLICATE_TENSOR",
  // ckpt / pickle / zip
  "ZIP_INVALID",
  "PICKLE_INVALID",
  "PICKLE_GLOBAL_REFUSED",
  "CKPT_UNSUPPORTED",
  // models and merges
  "FILE_NOT_FOUND",
  "FORMAT_UNKNOWN",
  "MODEL_NOT_FOUND",
  "MODEL_AMBIGUOUS",
  "ARCHITECTURE_MISMATCH",
  "SHAPE_MISMATCH",
  "METHOD_UNKNOWN",
  "INVALID_ARGUMENT",
  "RECIPE_INVALID",
  "OUTPUT_EXISTS",
  "INPUT_IS_TARGET",
  "DISK_FULL",
  "JOB_TOO_LARGE",
  "IO_ERROR",
  "INPUT_CHANGED",
  "ABORTED",
  "NATIVE_UNAVAILABLE",
  "INTERNAL",
  // Hugging Face model folders (lib/hf)
  "MODEL_FOLDER_INVALID",
  // LoRA files (lib/lora)
  "LORA_INVALID",
  "LORA_MISMATCH",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface MergeErrorContext {
  /** The file the error is about. */
  path?: string;
  /** The tensor the error is about. */
  tensor?: string;
  cause?: unknown;
}

export class MergeError extends Error {
  override readonly name = "MergeError";
  readonly code: ErrorCode;
  readonly path?: string;
  readonly tensor?: string;

  constructor(code: ErrorCode, message: string, context: MergeErrorContext = {}) {
    super(message, context.cause !== undefined ? { cause: context.cause } : undefined);
    this.code = code;
    if (context.path !== undefined) this.path = context.path;
    if (context.tensor !== undefined) this.tensor = context.tensor;
  }
}

export function isMergeError(value: unknown, code?: ErrorCode): value is MergeError {
  return value instanceof MergeError && (code === undefined || value.code === code);
}

/** Turns a Node fs error into a MergeError that names the file. */
export function fsError(err: unknown, path: string, doing: string): MergeError {
  const e = err as NodeJS.ErrnoException;
  if (e && e.code === "ENOENT") return new MergeError("FILE_NOT_FOUND", `${path}: no such file (${doing})`, { path, cause: err });
  if (e && e.code === "ENOSPC") return new MergeError("DISK_FULL", `${path}: disk full while ${doing}`, { path, cause: err });
  return new MergeError("IO_ERROR", `${path}: ${e?.message ?? String(err)} (${doing})`, { path, cause: err });
}
