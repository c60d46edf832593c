/** Entry point for .ckpt support, loaded lazily by openModel(); the reader lives in lib/formats/ckpt/. */
export { readCkptModel } from "./ckpt/reader";
