/**
 * The engines' shared sin/cos/acos (lib/engine/det-math.ts, the same code as native/core/
 * det_math.cc; their bits are compared through the SLERP parity tests) against Math.* over many
 * arguments: within a few ulps of V8's (itself within an ulp of the exact value).
 */
import { strict as assert } from "node:assert";
import { detAcos, detCos, detSin } from "../../../lib/engine/det-math";

/** Distance in ulps of double x from y (y's ulp). */
function ulps(x: number, y: number): number {
  if (x === y) return 0;
  const ulp = Math.max(Number.MIN_VALUE, 2 ** (Math.floor(Math.log2(Math.abs(y) || Number.MIN_VALUE)) - 52));
  return Math.abs(x - y) / ulp;
}

describe("deterministic sin, cos, acos", () => {
  it("sin and cos within 4 ulps (or 1e-17 absolute near their zeros) over [−20, 20]", () => {
    let worst = 0;
    for (let i = 0; i <= 200_000; i++) {
      const x = -20 + (40 * i) / 200_000 + i * 1e-9;
      for (const [mine, ref] of [[detSin(x), Math.sin(x)], [detCos(x), Math.cos(x)]] as const) {
        if (Math.abs(ref) < 1e-3) assert.ok(Math.abs(mine - ref) < 1e-17 + 1e-15 * Math.abs(x), `x=${x}: ${mine} vs ${ref}`);
        else worst = Math.max(worst, ulps(mine, ref));
      }
    }
    assert.ok(worst <= 4, `worst ${worst} ulps`);
  });

  it("acos within 4 ulps over [−1, 1], exact at the ends, NaN outside", () => {
    let worst = 0;
    for (let i = 0; i <= 200_000; i++) {
      const x = -1 + (2 * i) / 200_000;
      worst = Math.max(worst, ulps(detAcos(x), Math.acos(x)));
    }
    for (const x of [1 - 2 ** -52, -1 + 2 ** -53, 0.5, -0.5, 0.5 + 2 ** -53, 1e-300, -1e-300]) worst = Math.max(worst, ulps(detAcos(x), Math.acos(x)));
    assert.ok(worst <= 4, `worst ${worst} ulps`);
    assert.equal(detAcos(1), 0);
    assert.ok(Math.abs(detAcos(-1) - Math.PI) <= 2 ** -51);
    assert.ok(Number.isNaN(detAcos(1.0000001)) && Number.isNaN(detAcos(NaN)) && Number.isNaN(detSin(Infinity)));
  });

  it("sin of a slerp angle's parts: sin(θ − tθ)/sin θ near θ = 0 and θ = π stays accurate", () => {
    for (const theta of [1e-4, 0.03, 1, 3.1, Math.PI - 1e-4]) {
      for (const t of [0.1, 0.5, 0.9]) {
        const mine = detSin(theta - t * theta) / detSin(theta), ref = Math.sin(theta - t * theta) / Math.sin(theta);
        assert.ok(Math.abs(mine - ref) <= 1e-12 * Math.abs(ref), `θ=${theta} t=${t}`);
      }
    }
  });
});
