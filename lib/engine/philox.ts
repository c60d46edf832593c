/**
 * Philox4x32-10 (Random123; Salmon et al., SC 2011), the same function as native/core/philox.h,
 * in 32-bit integer arithmetic: Math.imul for the low words, 16-bit halves for the high words
 * (no BigInt in the hot loop). The mask word layout (key = seed, counter = element group, model,
 * tensor name hash) is documented there.
 */
const M0 = 0xd2511f53, M1 = 0xcd9e8d57, W0 = 0x9e3779b9, W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two u32. */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const ll = al * bl, lh = al * bh, hl = ah * bl;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + (mid >>> 16)) >>> 0;
}

/** The four output words for counter (c0..c3) and key (k0, k1), all u32. */
export function philox4x32(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out = new Uint32Array(4)): Uint32Array {
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, c0), lo0 = Math.imul(M0, c0) >>> 0, hi1 = mulhi(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
  return out;
}

/** FNV-1a 32 of the UTF-8 bytes of a tensor name (the mask key's name word). */
export function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(name, "utf8")) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}

/** Mask words of one model in one tensor, one Philox call per group of four elements. */
export class MaskStream {
  private group = -1;
  private readonly out = new Uint32Array(4);
  constructor(private readonly seedLo: number, private readonly seedHi: number, private readonly model: number, private readonly hash: number) {}

  word(index: number): number {
    const g = Math.floor(index / 4);
    if (g !== this.group) {
      philox4x32(g >>> 0, Math.floor(g / 4294967296) >>> 0, this.model, this.hash, this.seedLo, this.seedHi, this.out);
      this.group = g;
    }
    return this.out[index & 3]!;
  }
}

/** The drop threshold for a drop rate p in [0, 1): round(p·2^32), at most 2^32 − 1. */
export function dropThreshold(p: number): number {
  return Math.min(4294967295, Math.round(p * 4294967296));
}

/** A seed (a safe integer ≥ 0) as its two u32 words. */
export function seedWords(seed: number): [lo: number, hi: number] {
  return [seed % 4294967296, Math.floor(seed / 4294967296)];
}
