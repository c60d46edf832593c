/**
 * The mask generator: Philox4x32-10 in 32-bit integer arithmetic (lib/engine/philox.ts, the same
 * function as native/core/philox.h) against Random123's known-answer vectors and a BigInt
 * implementation; the mask word layout and the name hash against reference.ts.
 */
import { strict as assert } from "node:assert";
import { MaskStream, dropThreshold, nameHash, philox4x32, seedWords } from "../../../lib/engine/philox";
import { fnv1a, keptRef, philoxRef } from "./reference";

describe("Philox4x32-10 masks", () => {
  it("matches Random123's known-answer vectors (kat_vectors, philox4x32 10 rounds)", () => {
    const hex = (w: Uint32Array) => [...w].map((x) => x.toString(16).padStart(8, "0")).join(" ");
    assert.equal(hex(philox4x32(0, 0, 0, 0, 0, 0)), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
    assert.equal(hex(philox4x32(0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff)), "408f276d 41c83b0e a20bc7c6 6d5451fd");
    assert.equal(hex(philox4x32(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0)), "d16cfe09 94fdcceb 5001e420 24126ea1");
  });

  it("equals a BigInt implementation on 5000 random counters and keys", () => {
    let s = 12345;
    const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
    for (let i = 0; i < 5000; i++) {
      const c: [number, number, number, number] = [next(), next(), next(), next()], k: [number, number] = [next(), next()];
      assert.deepEqual([...philox4x32(...c, ...k)], philoxRef(c, k));
    }
  });

  it("mask words: counter (⌊i/4⌋, model, name hash), key = the seed, word i mod 4; thresholds round(p·2^32)", () => {
    const name = "model.diffusion_model.out.2.weight";
    assert.equal(nameHash(name), fnv1a(name));
    assert.equal(nameHash("é"), fnv1a("é"));
    const seed = 2 ** 33 + 7;
    assert.deepEqual(seedWords(seed), [7, 2]);
    const stream = new MaskStream(7, 2, 3, nameHash(name));
    for (const i of [0, 1, 2, 3, 4, 5, 1023, 2 ** 32 + 5, 2 ** 40 + 3]) {
      const word = stream.word(i);
      assert.equal(word >= dropThreshold(0.5), keptRef(seed, 3, name, i, 0.5), `element ${i}`);
    }
    assert.equal(dropThreshold(0), 0);
    assert.equal(dropThreshold(0.25), 2 ** 30);
    assert.equal(dropThreshold(0.9999999999), 2 ** 32 - 1);
  });
});
