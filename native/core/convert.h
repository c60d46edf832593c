// Scalar element conversions, bit for bit the rules of lib/dtypes.ts:
// - f32 -> f16: round to nearest even, overflow to ±Inf, subnormals exact; NaN becomes
//   `sign | 0x7e00 | (mantissa >> 13)` (what vcvtps2ph produces).
// - f16 -> f32: exact, including NaN payloads (a signalling NaN stays signalling; note that
//   vcvtph2ps quiets it, so the SIMD loads patch that bit back).
// - f32 -> bf16: round to nearest even on the upper 16 bits; NaN becomes `(bits >> 16) | 0x40`.
// - bf16 -> f32 exact; f32 <-> f64 by the hardware conversion (f64 -> f32 rounds to nearest even).
//
// Everything here is `static inline`: the per-ISA kernel files are compiled with different
// -m flags, and a non-static inline function could be emitted with AVX-512 code in one object
// and picked by the linker for all of them (ODR), which would crash older CPUs.
#pragma once

#include <cstdint>
#include <cstring>

static inline uint32_t st_f32_bits(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
}

static inline float st_bits_f32(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

static inline uint16_t st_f32_bits_to_f16(uint32_t bits) {
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t exp = (bits >> 23) & 0xffu;
    const uint32_t man = bits & 0x7fffffu;
    if (exp == 0xff) return (uint16_t) (man != 0 ? (sign | 0x7e00u | (man >> 13)) : (sign | 0x7c00u));
    const int32_t e = (int32_t) exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t) (sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t) sign; // below half the smallest subnormal
        const uint32_t m = man | 0x800000u;
        const uint32_t shift = (uint32_t) (14 - e); // 14..24
        uint32_t half = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t) (sign | half);
    }
    uint32_t half = ((uint32_t) e << 10) | (man >> 13);
    const uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; // may carry into Inf: correct
    return (uint16_t) (sign | half);
}

static inline uint32_t st_f16_to_f32_bits(uint16_t h) {
    const uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return sign | 0x7f800000u | (man << 13);
    if (exp == 0) {
        if (man == 0) return sign;
        uint32_t e = 127 - 15 + 1;
        while ((man & 0x400u) == 0) {
            man <<= 1;
            e--;
        }
        return sign | (e << 23) | ((man & 0x3ffu) << 13);
    }
    return sign | ((exp + 127 - 15) << 23) | (man << 13);
}

static inline uint16_t st_f32_bits_to_bf16(uint32_t bits) {
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t) ((bits >> 16) | 0x40u);
    return (uint16_t) ((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

static inline uint32_t st_bf16_to_f32_bits(uint16_t h) { return (uint32_t) h << 16; }

static inline float st_f16_to_f32(uint16_t h) { return st_bits_f32(st_f16_to_f32_bits(h)); }
static inline uint16_t st_f32_to_f16(float x) { return st_f32_bits_to_f16(st_f32_bits(x)); }
static inline float st_bf16_to_f32(uint16_t h) { return st_bits_f32(st_bf16_to_f32_bits(h)); }
static inline uint16_t st_f32_to_bf16(float x) { return st_f32_bits_to_bf16(st_f32_bits(x)); }
