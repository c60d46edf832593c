/**
 * Direct reads (native/core/prefetch.h merge_input_reader, file_io.h read_direct_at): the
 * reader's runs read with O_DIRECT from their offset rounded down to 4096 to their end rounded
 * up, into the read slots, the kernels pointed at the run's bytes inside. Forced here with the
 * knobs (TENSORMERGE_BUFFERED_READS=2: every run through the reader; TENSORMERGE_DIRECT_READS=2:
 * every run direct, although the test files are cached), on files whose tensors start at odd
 * offsets and whose size is not a multiple of 4096 (the last run ends at the end of the file,
 * inside a block). Expected bytes: the TS engine's output, the mapped path's, and for raw copies
 * the input file's own bytes.
 */
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nativeAvailable } from "../../lib/engine";
import { merge } from "../../lib/merge";
import { runNativeJob } from "../../lib/native/binding";
import { captureEngineStats, setOnlyTuningKnobs } from "../helpers/engines";
import { randomValues, tempDir, writeModel, type TestTensor } from "../helpers/models";
import { DT, makeJob, rng } from "./helpers";

const DIRECT = { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_DIRECT_READS: "2" };
const BUFFERED = { TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_DIRECT_READS: "0" };
const MAPPED = { TENSORMERGE_BUFFERED_READS: "0" };

function buildModel(path: string, seed: number, half: boolean): void {
  // A 3-byte tensor first and odd element counts: no tensor starts on a 4096 boundary.
  const tensors: Record<string, TestTensor> = { "a.u8": { dtype: "U8", shape: [3], raw: new Uint8Array([1, 2, 3]) } };
  [300_001, 262_145, 77_777, 400_003].forEach((n, i) => {
    tensors[`t${i}.weight`] = { dtype: half && i % 2 ? "F16" : "F32", shape: [n], values: randomValues(n, seed * 10 + i) };
  });
  writeModel(path, tensors);
}

/** Random bytes (a fresh file: its pages are still dirty in the page cache when the job reads it). */
function randomFile(path: string, size: number, seed: number): Buffer {
  const r = rng(seed);
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = Math.floor(r() * 256);
  writeFileSync(path, bytes);
  return bytes;
}

/** A job copying F32 elements [offset, offset + 4n) of one input, unchanged, into a new file. */
async function copyJob(input: string, size: number, offset: number, n: number, out: string): Promise<Record<string, number>> {
  const result = await runNativeJob(makeJob({
    inputs: [{ path: input, size }],
    outputs: [{ path: out, size: n * 4, literals: [] }],
    pieces: [{ name: "copy", n, ops: [], writes: [{ output: 0, offset: 0, dtype: DT.F32, source: { kind: "input", file: 0, offset, dtype: DT.F32 } }] }],
  }));
  return result.stats!;
}

describe("native engine: direct (O_DIRECT) reads", function () {
  this.timeout(120_000);
  let restore = () => {};
  let dir: ReturnType<typeof tempDir>;
  const stats = captureEngineStats();
  const p = (n: string) => join(dir.path, n);
  before(function () {
    if (!nativeAvailable()) this.skip();
    dir = tempDir("tm-direct-reads-");
    buildModel(p("a.safetensors"), 1, false);
    buildModel(p("b.safetensors"), 2, true);
    buildModel(p("c.safetensors"), 3, false);
    stats.install();
  });
  afterEach(() => {
    restore();
    restore = () => {};
  });
  after(() => {
    stats.restore();
    dir?.cleanup();
  });

  it("the test models have unaligned sizes (the last run ends inside a block)", () => {
    for (const f of ["a", "b", "c"]) assert.notEqual(statSync(p(`${f}.safetensors`)).size % 4096, 0, f);
  });

  for (const [method, dtype] of [["add-difference", "fp32"], ["weighted-sum", "fp16"]] as const) {
    it(`${method} → ${dtype}: direct reads give the TS engine's and the mapped path's bytes`, async () => {
      const base = { a: p("a.safetensors"), b: p("b.safetensors"), ...(method === "add-difference" ? { c: p("c.safetensors") } : {}), method, multiplier: 0.3, dtype };
      // Same file name everywhere: the name is part of the recipe metadata in the header.
      const outIn = (sub: string) => {
        mkdirSync(p(sub), { recursive: true });
        return join(p(sub), `${method}.safetensors`);
      };
      await merge({ ...base, out: outIn(`${method}-js`), engine: "js" });
      const expected = readFileSync(outIn(`${method}-js`));
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...MAPPED });
      await merge({ ...base, out: outIn(`${method}-mapped`), engine: "native", threads: 2 });
      assert.ok(readFileSync(outIn(`${method}-mapped`)).equals(expected), "mapped path vs TS engine");
      restore();
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...BUFFERED });
      await merge({ ...base, out: outIn(`${method}-buffered`), engine: "native", threads: 2 });
      const buffered = stats.last()!;
      assert.equal(buffered.bytesDirectRead, 0, "TENSORMERGE_DIRECT_READS=0 read direct");
      const runBytes = buffered.bytesBufferedRead!;
      assert.ok(runBytes > 0);
      // Several readers (requests in flight), one, and 1 MiB slots (some runs go through the map).
      const cases: Record<string, string>[] = [{}, { TENSORMERGE_READERS: "1" }, { TENSORMERGE_READERS: "4" }, { TENSORMERGE_READ_BUFFER_MIB: "1" }];
      for (const [k, extra] of cases.entries()) {
        for (const threads of [1, 2]) {
          restore();
          restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...DIRECT, ...extra });
          stats.reset();
          const out = outIn(`${method}-direct-${k}-${threads}`);
          await merge({ ...base, out, engine: "native", threads });
          const s = stats.last()!;
          const label = `${JSON.stringify(extra)}, ${threads} thread(s)`;
          assert.ok(readFileSync(out).equals(expected), label);
          assert.equal(s.bufferedReads, 1, label);
          assert.equal(s.directReadFallbacks, 0, `${label}: ${dir.path} refused O_DIRECT`);
          assert.equal(s.bytesBufferedRead, 0, `${label}: a run was read buffered`);
          if (!extra.TENSORMERGE_READ_BUFFER_MIB) assert.equal(s.bytesDirectRead, runBytes, `${label}: the direct reads did not cover the buffered reads' runs`);
          else assert.ok(s.bytesDirectRead! < runBytes, `${label}: ${s.bytesDirectRead} of ${runBytes}`); // the rest through the map
          assert.equal(s.readers, extra.TENSORMERGE_READERS ? Number(extra.TENSORMERGE_READERS) : 4, label);
        }
      }
    });
  }

  it("a file just written (dirty pages) reads back exactly, at odd offsets, up to its unaligned end", async () => {
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...DIRECT });
    const size = 3 * (1 << 20) + 4096 + 123; // several windows, the end inside a block
    for (const [k, offset] of [12, 4096, 4100, 1 << 20].entries()) {
      const input = p(`fresh-${k}.bin`);
      const bytes = randomFile(input, size, 40 + k);
      const n = Math.floor((size - offset) / 4); // the last element ends at most 3 bytes before the end
      const out = p(`fresh-${k}.out`);
      const s = await copyJob(input, size, offset, n, out);
      assert.ok(readFileSync(out).equals(bytes.subarray(offset, offset + n * 4)), `offset ${offset}`);
      assert.equal(s.bytesDirectRead, n * 4, `offset ${offset}: not every byte was read direct`);
      // Ends exactly at the end of the file.
      const tail = size - 4 * 1000;
      const outTail = p(`fresh-${k}-tail.out`);
      await copyJob(input, size, tail, 1000, outTail);
      assert.ok(readFileSync(outTail).equals(bytes.subarray(tail)), `offset ${offset}: the run ending at the end of the file`);
    }
  });

  it("a filesystem that refuses direct reads (EINVAL): the reads go buffered, the fallback is counted, the bytes are right", async () => {
    // TENSORMERGE_DIRECT_READS=3 fails each file's direct reads with EINVAL (a stand-in: this
    // machine's filesystems, tmpfs included since Linux 6.6, accept O_DIRECT).
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_BUFFERED_READS: "2", TENSORMERGE_DIRECT_READS: "3" });
    const size = 2 * (1 << 20) + 77;
    const input = p("refused.bin");
    const bytes = randomFile(input, size, 7);
    const n = Math.floor((size - 20) / 4);
    const out = p("refused.out");
    const s = await copyJob(input, size, 20, n, out);
    assert.ok(readFileSync(out).equals(bytes.subarray(20, 20 + n * 4)));
    assert.equal(s.directReadFallbacks, 1);
    assert.equal(s.bytesDirectRead, 0);
    assert.equal(s.bytesBufferedRead, n * 4);
  });

  it("tmpfs (/dev/shm): direct where the kernel allows it (a probe says), else the buffered fallback; the bytes are right", async function () {
    let shm: string;
    try {
      shm = mkdtempSync("/dev/shm/tm-direct-reads-");
    } catch {
      this.skip();
    }
    try {
      restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", ...DIRECT });
      const size = 2 * (1 << 20) + 77;
      const input = join(shm, "in.bin");
      const bytes = randomFile(input, size, 8);
      // The probe, independent of the engine: Python's os.preadv with O_DIRECT into a page-aligned mmap buffer.
      const probe = spawnSync("/usr/bin/python3", ["-c", [
        "import mmap, os, sys",
        "buf = mmap.mmap(-1, 8192)",
        "try:",
        "    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)",
        "    os.preadv(fd, [buf], 4096)",
        "    print('direct')",
        "except OSError:",
        "    print('refused')",
      ].join("\n"), input], { encoding: "utf8" });
      assert.equal(probe.status, 0, probe.stderr);
      const direct = probe.stdout.trim() === "direct";
      const n = Math.floor((size - 20) / 4);
      const out = join(shm, "out.bin");
      const s = await copyJob(input, size, 20, n, out);
      assert.ok(readFileSync(out).equals(bytes.subarray(20, 20 + n * 4)));
      assert.equal(s.directReadFallbacks, direct ? 0 : 1, `the probe says ${probe.stdout.trim()}`);
      assert.equal(s.bytesDirectRead, direct ? n * 4 : 0);
      assert.equal(s.bytesBufferedRead, direct ? 0 : n * 4);
    } finally {
      rmSync(shm, { recursive: true, force: true });
    }
  });

  it("cancel mid-merge during direct reads: ABORTED, no output, no temporary file", async () => {
    // 1 MiB windows with a pause after each (TENSORMERGE_WINDOW_PAUSE_MS): the abort lands while
    // the reader has the next window's direct reads queued or in flight.
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_WINDOW_PAUSE_MS: "150", ...DIRECT });
    const sub = p("cancel");
    mkdirSync(sub, { recursive: true });
    const out = join(sub, "cancelled.safetensors");
    const controller = new AbortController();
    let sawProgress = false;
    const pending = merge({
      a: p("a.safetensors"), b: p("b.safetensors"), method: "weighted-sum", multiplier: 0.5, out, engine: "native", threads: 2, signal: controller.signal,
      onProgress: (q) => {
        if (q.bytesDone > 0 && q.bytesDone < q.bytesTotal && !sawProgress) {
          sawProgress = true;
          controller.abort();
        }
      },
    });
    await assert.rejects(pending, (e: unknown) => (e as { code?: string }).code === "ABORTED");
    assert.ok(sawProgress, "no progress report arrived mid-merge");
    assert.deepEqual(readdirSync(sub), [], "no output and no temporary file may remain");
  });

  it("the default (TENSORMERGE_DIRECT_READS unset) reads cached runs buffered, not direct", async () => {
    restore = setOnlyTuningKnobs({ TENSORMERGE_WINDOW_MIB: "1", TENSORMERGE_BUFFERED_READS: "2" });
    const size = (1 << 20) + 5;
    const input = p("cached.bin");
    const bytes = randomFile(input, size, 9);
    readFileSync(input); // in the page cache
    const n = Math.floor(size / 4);
    const out = p("cached.out");
    const s = await copyJob(input, size, 0, n, out);
    assert.ok(readFileSync(out).equals(bytes.subarray(0, n * 4)));
    assert.equal(s.bytesDirectRead, 0);
    assert.equal(s.bytesBufferedRead, n * 4);
    assert.equal(s.readers, 4, "default readers with direct reads on");
  });
});
