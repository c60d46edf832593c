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

static inline constexpr uint32_t st_f16_to_f32_bits(uint16_t h) {
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

// ---- fp8 ------------------------------------------------------------------------------------
// The rules of PyTorch's `tensor.to(torch.float8_e4m3fn / float8_e5m2)` and `.float()` (its
// scalar c10 conversions), written here with integer operations only:
// - e4m3fn (S.EEEE.MMM, bias 7, max 448, no infinity, NaN = S.1111.111): f32 -> e4m3fn rounds to
//   nearest even as if the format went on past 448 (its next value would be 480); a result
//   beyond 448 (|x| > 464; 464 itself ties to the even 448), ±Inf and NaN all become
//   `sign | 0x7f`, the NaN (PyTorch does not saturate); below 2^-6 the result is a subnormal, a
//   multiple of 2^-9, rounded to nearest even (so |x| <= 2^-10 gives ±0).
// - e5m2 (S.EEEEE.MM, bias 15, max 57344, IEEE-like): rounds to nearest even, |x| >= 61440
//   (the tie above 57344 goes to the even Inf) and ±Inf become ±Inf (0x7c), NaN becomes
//   `sign | 0x7f`; subnormals are multiples
//   of 2^-16 (|x| <= 2^-17 gives ±0).
// - widening is exact for numbers. NaN codes widen as PyTorch's scalar path does: e4m3fn
//   S.1111.111 -> sign | 0x7ff00000; e5m2 goes through fp16 and is quieted like vcvtph2ps:
//   0x7d and 0x7f -> sign | 0x7fe00000, 0x7e -> sign | 0x7fc00000.

/** m / 2^shift rounded to nearest even (shift in 1..31). */
static inline uint32_t st_round_shift_rne(uint32_t m, uint32_t shift) {
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (q & 1))) q++;
    return q;
}

static inline uint8_t st_f32_bits_to_f8_e4m3(uint32_t bits) {
    const uint32_t sign = (bits >> 24) & 0x80u;
    const uint32_t abs = bits & 0x7fffffffu;
    if (abs >= 0x43f00000u) return (uint8_t) (sign | 0x7fu); // >= 480, Inf, NaN (464 < |x| < 480 rounds to 0x7f below)
    if (abs < 0x3c800000u) { // below 2^-6: a multiple of 2^-9
        if (abs <= 0x3a800000u) return (uint8_t) sign; // <= 2^-10: ties to the even 0
        const uint32_t exp = abs >> 23; // 117..120
        return (uint8_t) (sign | st_round_shift_rne((abs & 0x7fffffu) | 0x800000u, 141 - exp));
    }
    // normal: rebias 127 -> 7, keep 3 mantissa bits; a carry moves into the exponent (correct)
    return (uint8_t) (sign | st_round_shift_rne(abs - ((127u - 7u) << 23), 20));
}

static inline uint8_t st_f32_bits_to_f8_e5m2(uint32_t bits) {
    const uint32_t sign = (bits >> 24) & 0x80u;
    const uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint8_t) (sign | 0x7fu); // NaN
    if (abs >= 0x47800000u) return (uint8_t) (sign | 0x7cu); // >= 65536, Inf
    if (abs < 0x38800000u) { // below 2^-14: a multiple of 2^-16
        if (abs <= 0x37000000u) return (uint8_t) sign; // <= 2^-17
        const uint32_t exp = abs >> 23; // 110..112
        return (uint8_t) (sign | st_round_shift_rne((abs & 0x7fffffu) | 0x800000u, 134 - exp));
    }
    return (uint8_t) (sign | st_round_shift_rne(abs - ((127u - 15u) << 23), 21)); // 61440.. carries to 0x7c
}

static inline constexpr uint32_t st_f8_e4m3_to_f32_bits(uint8_t c) {
    const uint32_t sign = (uint32_t) (c & 0x80u) << 24;
    const uint32_t exp = (c >> 3) & 0xfu, man = c & 7u;
    if (exp == 0xf && man == 7) return sign | 0x7ff00000u;
    if (exp != 0) return sign | ((exp + 127 - 7) << 23) | (man << 20);
    if (man == 0) return sign;
    uint32_t e = 127 - 7 + 1, m = man; // subnormal: normalise
    while ((m & 8u) == 0) {
        m <<= 1;
        e--;
    }
    return sign | (e << 23) | ((m & 7u) << 20);
}

static inline constexpr uint32_t st_f8_e5m2_to_f32_bits(uint8_t c) {
    const uint32_t bits = st_f16_to_f32_bits((uint16_t) (c << 8));
    return (bits & 0x7fffffffu) > 0x7f800000u ? bits | 0x00400000u : bits; // quiet NaNs
}

/** Every fp8 code widened: 256 entries per format, filled once by the scalar conversions. */
struct st_f8_tables {
    uint32_t e4m3[256];
    uint32_t e5m2[256];
};

static constexpr st_f8_tables st_f8_tables_make() {
    st_f8_tables t{};
    for (uint32_t c = 0; c < 256; c++) {
        t.e4m3[c] = st_f8_e4m3_to_f32_bits((uint8_t) c);
        t.e5m2[c] = st_f8_e5m2_to_f32_bits((uint8_t) c);
    }
    return t;
}

// Constant-initialized (no code runs at load time, see kernels_simd.h); one copy per object.
static constexpr st_f8_tables st_f8_table = st_f8_tables_make();

static inline float st_f8_e4m3_to_f32(uint8_t c) { return st_bits_f32(st_f8_table.e4m3[c]); }
static inline float st_f8_e5m2_to_f32(uint8_t c) { return st_bits_f32(st_f8_table.e5m2[c]); }
static inline uint8_t st_f32_to_f8_e4m3(float x) { return st_f32_bits_to_f8_e4m3(st_f32_bits(x)); }
static inline uint8_t st_f32_to_f8_e5m2(float x) { return st_f32_bits_to_f8_e5m2(st_f32_bits(x)); }

// fp8 pair-table lookup (pair_table.h), the scalar loop every ISA's leftover elements use:
// dst[i] = entry (a[i] << 8) | b[i] of `table`, `size` bytes per entry.
template <size_t size>
static inline void st_pair_lookup(uint8_t * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table, size_t n) {
    for (size_t i = 0; i < n; i++) std::memcpy(dst + i * size, table + (((size_t) a[i] << 8) | b[i]) * size, size);
}
