/**
 * PyTorch checkpoints (.ckpt / .pt / .pth), read and written without executing pickle code.
 *
 * @example
 * import { readCkptModel, layoutCkpt } from "tensormerge/dist/lib/formats/ckpt";
 * const model = await readCkptModel("model.ckpt"); // tensor table, data stays on disk
 */
export { readCkptModel, readCkptSource, MAX_PICKLE_BYTES } from "./reader";
export { layoutCkpt, pickleCheckpoint, contiguousStrides, CKPT_ALIGNMENT, type CkptLayoutOptions } from "./writer";
export { readZipDirectory, readZipEntry, type ZipEntry, type ZipDirectory } from "./zip";
export { unpickle, PyDict, PyTuple, PySet, PyGlobal, PyObject, type PyValue, type UnpickleHooks, type PickleLimits } from "./pickle";
export { PickleWriter, OP } from "./pickle-writer";
export { bufferSource, withFileSource, type ByteSource } from "./source";
export { CKPT_METADATA_KEY } from "./state-dict";
export { findTorchGlobal, STORAGE_DTYPES, DTYPE_STORAGE } from "./torch";
