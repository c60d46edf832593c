// Philox4x32-10, the counter-based generator of Random123 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011): 10 rounds of two 32x32->64 multiplications over a
// 128-bit counter with a 64-bit key. A mask word depends only on (key, counter), so DARE masks
// do not depend on threads, windows, key order or the engine. lib/engine/philox.ts is the same
// function in TypeScript (Math.imul and 16-bit halves).
//
// tensormerge's mask word of element `index` of model `model` in the tensor whose name hashes to
// `name_hash` (FNV-1a 32, lib/engine/philox.ts nameHash), with a 64-bit seed:
//   key     = (seed & 0xffffffff, seed >> 32)
//   counter = (g & 0xffffffff, g >> 32, model, name_hash), g = index >> 2
//   word    = output[index & 3]
// An element is dropped when word < threshold (threshold = round(p·2^32), at most 2^32 − 1).
#pragma once

#include <cstddef>
#include <cstdint>

struct philox4x32 {
    uint32_t v[4];
};

inline philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    constexpr uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += w0;
            k1 += w1;
        }
        const uint64_t p0 = (uint64_t) m0 * c0, p1 = (uint64_t) m1 * c2;
        const uint32_t hi0 = (uint32_t) (p0 >> 32), lo0 = (uint32_t) p0, hi1 = (uint32_t) (p1 >> 32), lo1 = (uint32_t) p1;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    return {{c0, c1, c2, c3}};
}

/**
 * The words of groups [g0, g0 + count) of one (model, name hash, seed) stream, group g's four
 * words at out[4(g − g0) …]: philox4x32_10 per group, computed 16 groups at a time lane by lane
 * (u32 × u32 → u64 products), which the compiler vectorises. Integer arithmetic: the same words
 * whatever the ISA.
 */
__attribute__((always_inline)) inline void philox4x32_10_groups(uint32_t k0, uint32_t k1, uint32_t model, uint32_t name_hash, uint64_t g0, size_t count, uint32_t * out) {
    constexpr uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    constexpr size_t lanes = 16;
    for (size_t b0 = 0; b0 < count; b0 += lanes) {
        uint32_t c0[lanes], c1[lanes], c2[lanes], c3[lanes];
        for (size_t l = 0; l < lanes; l++) {
            const uint64_t g = g0 + b0 + l;
            c0[l] = (uint32_t) g;
            c1[l] = (uint32_t) (g >> 32);
            c2[l] = model;
            c3[l] = name_hash;
        }
        uint32_t ka = k0, kb = k1;
        for (int round = 0; round < 10; round++) {
            if (round > 0) {
                ka += w0;
                kb += w1;
            }
            for (size_t l = 0; l < lanes; l++) {
                const uint64_t p0 = (uint64_t) m0 * c0[l], p1 = (uint64_t) m1 * c2[l];
                const uint32_t n0 = (uint32_t) (p1 >> 32) ^ c1[l] ^ ka, n2 = (uint32_t) (p0 >> 32) ^ c3[l] ^ kb;
                c1[l] = (uint32_t) p1;
                c3[l] = (uint32_t) p0;
                c0[l] = n0;
                c2[l] = n2;
            }
        }
        const size_t nb = count - b0 < lanes ? count - b0 : lanes;
        for (size_t l = 0; l < nb; l++) {
            out[4 * (b0 + l)] = c0[l];
            out[4 * (b0 + l) + 1] = c1[l];
            out[4 * (b0 + l) + 2] = c2[l];
            out[4 * (b0 + l) + 3] = c3[l];
        }
    }
}

/** Mask words of consecutive elements, one Philox call per group of four. */
class mask_stream {
public:
    mask_stream() = default;
    mask_stream(uint32_t seed_lo, uint32_t seed_hi, uint32_t model, uint32_t name_hash) : k0_(seed_lo), k1_(seed_hi), model_(model), hash_(name_hash) {}

    uint32_t word(uint64_t index) {
        const uint64_t g = index >> 2;
        if (!valid_ || g != group_) {
            out_ = philox4x32_10((uint32_t) g, (uint32_t) (g >> 32), model_, hash_, k0_, k1_);
            group_ = g;
            valid_ = true;
        }
        return out_.v[index & 3];
    }

private:
    uint32_t k0_ = 0, k1_ = 0, model_ = 0, hash_ = 0;
    uint64_t group_ = 0;
    bool valid_ = false;
    philox4x32 out_{};
};
