/**
 * Hostile checkpoints: every fixture is refused with its error code, and a marker file that the
 * payload would create never appears. A control suite runs the same payloads through Python's
 * own (unsafe) unpickler and sees the marker appear, so a passing test means "refused", not
 * "the payload was broken".
 */
import { strict as assert } from "node:assert";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isMergeError, MergeError } from "../../lib/errors";
import { openModel } from "../../lib/formats";
import { readCkptSource } from "../../lib/formats/ckpt/reader";
import { bufferSource } from "../../lib/formats/ckpt/source";
import { unpickle } from "../../lib/formats/ckpt/pickle";
import { OP, PickleWriter } from "../../lib/formats/ckpt/pickle-writer";
import { findTorchGlobal } from "../../lib/formats/ckpt/torch";
import { MALICIOUS, PY_UNSAFE_LOAD } from "../fixtures/ckpt/malicious";
import { requirePython, runPython, tempDir } from "./helpers";

describe("ckpt defence: hostile files are refused and nothing runs", function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof tempDir>;
  before(() => { tmp = tempDir(); });
  after(() => tmp.cleanup());

  for (const f of MALICIOUS) {
    it(`${f.id}: ${f.what} → ${f.expect}`, async () => {
      const path = join(tmp.dir, `${f.id}.ckpt`);
      const marker = join(tmp.dir, `${f.id}.ran`);
      writeFileSync(path, f.build(marker));
      await assert.rejects(openModel(path), (e: unknown) => {
        assert.ok(e instanceof MergeError, `expected a MergeError, got ${String(e)}`);
        assert.equal(e.code, f.expect, e.message);
        assert.equal(e.path, path);
        return true;
      });
      assert.equal(existsSync(marker), false, "the payload ran");
    });
  }

  it("names the refused global (the name is this error's contract)", async () => {
    const f = MALICIOUS.find((x) => x.id === "subprocess-popen")!;
    await assert.rejects(readCkptSource(bufferSource(f.build("/nonexistent/x"))), (e: unknown) => isMergeError(e, "PICKLE_GLOBAL_REFUSED") && e.message.includes("subprocess.Popen"));
  });

  it("caps the memo, the stack and the mark depth", () => {
    const hooks = { findGlobal: findTorchGlobal };
    const memoFlood = new PickleWriter().proto(2).op(OP.NONE);
    for (let i = 0; i < 1000; i++) memoFlood.op(OP.MEMOIZE);
    memoFlood.op(OP.STOP);
    assert.throws(() => unpickle(memoFlood.bytes(), hooks, { where: "t", limits: { maxMemo: 100 } }), (e: unknown) => isMergeError(e, "PICKLE_INVALID"));
    const stackFlood = new PickleWriter().proto(2);
    for (let i = 0; i < 1000; i++) stackFlood.op(OP.NONE);
    stackFlood.op(OP.STOP);
    assert.throws(() => unpickle(stackFlood.bytes(), hooks, { where: "t", limits: { maxStack: 100 } }), (e: unknown) => isMergeError(e, "PICKLE_INVALID"));
    // Stack items under marks count too.
    const marked = new PickleWriter().proto(2);
    for (let i = 0; i < 60; i++) marked.op(OP.NONE).op(OP.MARK);
    marked.op(OP.STOP);
    assert.throws(() => unpickle(marked.bytes(), hooks, { where: "t", limits: { maxStack: 50 } }), (e: unknown) => isMergeError(e, "PICKLE_INVALID"));
  });

  it("treats allowlisted inert globals as data (numpy scalar for global_step) and still finds the tensors", async () => {
    // {"state_dict": {...}, "global_step": numpy.core.multiarray.scalar(numpy.dtype("i8"), b"...")}
    const w = new PickleWriter().proto(2).op(OP.EMPTY_DICT).op(OP.MARK);
    w.str("global_step").global("numpy.core.multiarray", "scalar").global("numpy", "dtype").str("i8").op(OP.NEWFALSE).op(OP.NEWTRUE).op(OP.TUPLE3).op(OP.REDUCE);
    w.op(OP.MARK).int(3).str("<").op(OP.NONE).op(OP.NONE).op(OP.NONE).int(-1).int(-1).int(0).op(OP.TUPLE).op(OP.BUILD);
    w.global("_codecs", "encode").str("\u0001\u0000").str("latin1").op(OP.TUPLE2).op(OP.REDUCE).op(OP.TUPLE2).op(OP.REDUCE);
    w.str("state_dict").op(OP.EMPTY_DICT).str("w").global("torch._utils", "_rebuild_tensor_v2");
    w.op(OP.MARK).op(OP.MARK).str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(1).op(OP.TUPLE).op(OP.BINPERSID);
    w.int(0).op(OP.EMPTY_TUPLE).op(OP.EMPTY_TUPLE).op(OP.NEWFALSE).global("collections", "OrderedDict").op(OP.EMPTY_TUPLE).op(OP.REDUCE).op(OP.TUPLE).op(OP.REDUCE).op(OP.SETITEM);
    w.op(OP.SETITEMS).op(OP.STOP);
    const { buildZip } = await import("../fixtures/ckpt/zip-builder");
    const zip = buildZip([{ name: "a/data.pkl", data: w.bytes() }, { name: "a/data/0", data: new Uint8Array(4) }]).bytes;
    const model = await readCkptSource(bufferSource(zip, "inert.ckpt"));
    assert.deepEqual(model.tensors.map((t) => [t.name, t.shape]), [["w", []]]);
    assert.ok(model.notes.some((n) => n.includes("global_step")));
  });

  describe("control: Python's own unpickler runs these payloads", function () {
    before(function () { requirePython(this); });
    for (const f of MALICIOUS.filter((x) => x.live)) {
      it(`${f.id}`, () => {
        const path = join(tmp.dir, `${f.id}.control.ckpt`);
        const marker = join(tmp.dir, `${f.id}.control.ran`);
        writeFileSync(path, f.build(marker));
        runPython(PY_UNSAFE_LOAD, [path]);
        assert.equal(existsSync(marker), true, "the control payload did not run: the fixture is not a real attack");
      });
    }
  });
});
