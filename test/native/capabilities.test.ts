import * as assert from "assert";
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
});
