import * as assert from "assert";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { DTYPES } from "../../lib/dtypes";
import { ERROR_CODES } from "../../lib/errors";
import { KERNELS } from "../../lib/native/job";
import { capabilities, nativeAvailable, nativeLoadError } from "../../lib/native/binding";

describe("native: loading and capabilities", () => {
  it("loads the addon", () => {
    assert.ok(nativeAvailable(), nativeLoadError()?.message);
  });

  it("reports the kernel sets the CPU supports", () => {
    const caps = capabilities();
    assert.ok(caps.isas.includes("scalar"));
    assert.ok(caps.isas.includes(caps.best));
    if (caps.isas.includes("avx2")) assert.ok(caps.cpu.avx2 && caps.cpu.f16c);
    if (caps.isas.includes("avx512")) assert.ok(caps.cpu.avx512f && caps.cpu.avx512bw && caps.cpu.avx512vl);
  });

  it("compiles the same kernel, dtype and error-code lists as the TypeScript side", () => {
    const caps = capabilities();
    assert.deepStrictEqual(caps.kernels, [...KERNELS]);
    assert.deepStrictEqual(caps.dtypes, [...DTYPES]);
    assert.deepStrictEqual(caps.errorCodes, [...ERROR_CODES]);
  });

  it("reports NATIVE_UNAVAILABLE with what it tried and the fix when the addon cannot load", () => {
    const binding = join(__dirname, "../../lib/native/binding.js");
    const script = `
      const b = require(${JSON.stringify(binding)});
      const err = b.nativeLoadError();
      b.runNativeJob({}).then(() => console.log("resolved"), (e) => console.log(JSON.stringify({
        available: b.nativeAvailable(), code: e.code, same: e === err, message: e.message })));`;
    const bogus = "/nonexistent/tensormerge.node";
    const r = spawnSync(process.execPath, ["-e", script], { env: { ...process.env, TENSORMERGE_NATIVE: bogus }, encoding: "utf8" });
    const out = JSON.parse(r.stdout.trim()) as { available: boolean; code: string; same: boolean; message: string };
    assert.equal(out.available, false);
    assert.equal(out.code, "NATIVE_UNAVAILABLE");
    assert.ok(out.same);
    assert.ok(out.message.includes(bogus) && out.message.includes("npm run build:native"), out.message);
    assert.ok(!out.message.includes("\n"), "one line, as every CLI error");
  });
});
