// AVX2 + F16C kernels (fp8 narrowing in integer lanes). Compiled with -mavx2 -mf16c and without -mfma (and with
// -ffp-contract=off), so every mul and add rounds separately, like the scalar reference.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "f16_simd.h"
#include "kernels_simd.h"

namespace {

constexpr bool invc_exact_in_f32(const merge_pow_tables & T) {
    for (double v : T.invc)
        if ((double) (float) v != v) return false;
    return true;
}
static_assert(invc_exact_in_f32(MERGE_POW_TABLES), "v_avx2 holds invc as fp32 lanes");

struct v_avx2 {
    static constexpr size_t W = 8;
    typedef __m256 vf;

    static vf loadu(const float * p) { return _mm256_loadu_ps(p); }
    static void storeu(float * p, vf x) { _mm256_storeu_ps(p, x); }
    static vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
    static vf sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
    static vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
    static vf set1(float x) { return _mm256_set1_ps(x); }

    // For the method kernels (method_kernels_simd.h): masks are all-ones lanes.
    typedef __m256 vm;
    static vf div(vf a, vf b) { return _mm256_div_ps(a, b); }
    static vf zero() { return _mm256_setzero_ps(); }
    static vm lt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
    static vm gt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
    static vm le(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
    static vm eq(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
    static vm unord(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
    static vm signbit(vf x) { return _mm256_castsi256_ps(_mm256_srai_epi32(_mm256_castps_si256(x), 31)); }
    static vm m_or(vm a, vm b) { return _mm256_or_ps(a, b); }
    static bool all_lanes(vm m) { return _mm256_movemask_ps(m) == 0xff; }
    static vm m_andnot(vm a, vm b) { return _mm256_andnot_ps(a, b); }
    static vf blend(vm m, vf a, vf b) { return _mm256_blendv_ps(a, b, m); }
    static vf clear_sign(vf x) { return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff))); }
    static vf flip_sign(vf x) { return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(x), _mm256_set1_epi32((int) 0x80000000u))); }

    // Every lane normal > 0, finite and not 1 (as bits: FLT_MIN's <= b < +Inf's, b != 1's).
    static bool all_pow_general(vf x) {
        const __m256i b = _mm256_castps_si256(x);
        const __m256i ok = _mm256_andnot_si256(_mm256_cmpeq_epi32(b, _mm256_set1_epi32(0x3f800000)),
                                               _mm256_and_si256(_mm256_cmpgt_epi32(b, _mm256_set1_epi32(0x007fffff)), _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7f800000), b)));
        return _mm256_movemask_ps(_mm256_castsi256_ps(ok)) == 0xff;
    }
    typedef __m256d vd;
    typedef __m256d dm;
    static vd d_lo(vf x) { return _mm256_cvtps_pd(_mm256_castps256_ps128(x)); }
    static vd d_hi(vf x) { return _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)); }
    static vf d_narrow(vd lo, vd hi) { return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo)); }
    static vd d_add(vd a, vd b) { return _mm256_add_pd(a, b); }
    static vd d_sub(vd a, vd b) { return _mm256_sub_pd(a, b); }
    static vd d_mul(vd a, vd b) { return _mm256_mul_pd(a, b); }
    static vd d_set1(double x) { return _mm256_set1_pd(x); }
    static vd d_min(vd a, vd b) { return _mm256_min_pd(a, b); }
    static vd d_max(vd a, vd b) { return _mm256_max_pd(a, b); }
    static vd d_floor(vd x) { return _mm256_round_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    // ⌊16x⌋/16 (16x and the /16 are exact scalings)
    static vd d_floor16(vd x) { return _mm256_mul_pd(d_floor(_mm256_mul_pd(x, _mm256_set1_pd(16.0))), _mm256_set1_pd(0.0625)); }
    typedef __m256i vix;
    // k/16 + 1.5·2^48 for k/16 a multiple of 1/16 (|k| < 2^51): its ulp is 1/16, so it holds
    // k + 2^51 in its low mantissa bits (exact): its low bits are k's, in two's complement.
    static vix d_int_bits_div16(vd k16) { return _mm256_castpd_si256(_mm256_add_pd(k16, _mm256_set1_pd(422212465065984.0))); }
    // v·2^⌊k/16⌋ for v·2^⌊k/16⌋ a normal double: ⌊k/16⌋ added to v's exponent field (kb's
    // low 16 bits are k's, so (kb & ~15) << 48 is ⌊k/16⌋ << 52 modulo 2^64).
    static vd d_scale_pow2_div16(vd v, vix kb) {
        return _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(v), _mm256_slli_epi64(_mm256_andnot_si256(_mm256_set1_epi64x(15), kb), 48)));
    }
    // The pow tables as fp32 lanes, looked up by vpermps on the fp32 lanes of x (8 lanes per
    // lookup, where a lookup in 64-bit lanes gives 4): an index's low 3 bits pick a lane of one
    // register, a blend on bit 3 picks the register. invc is exact in fp32 (21 bits), so one
    // fp32 table widened; log2c and exp2j are two tables, of the low and the high 32 bits of
    // each double, whose lookups are interleaved (unpcklps/unpckhps) into doubles.
    struct pow_tabs {
        __m256 invc[2], log2c_lo[2], log2c_hi[2], exp2j_lo[2], exp2j_hi[2];
    };
    static void split_table16(const double * t, __m256 (&lo)[2], __m256 (&hi)[2]) {
        uint32_t l[16], h[16];
        for (int i = 0; i < 16; i++) {
            uint64_t b;
            std::memcpy(&b, t + i, 8);
            l[i] = (uint32_t) b, h[i] = (uint32_t) (b >> 32);
        }
        lo[0] = _mm256_loadu_ps((const float *) l), lo[1] = _mm256_loadu_ps((const float *) (l + 8));
        hi[0] = _mm256_loadu_ps((const float *) h), hi[1] = _mm256_loadu_ps((const float *) (h + 8));
    }
    static pow_tabs load_pow_tabs(const merge_pow_tables & T) {
        pow_tabs tb;
        float c[16];
        for (int i = 0; i < 16; i++) c[i] = (float) T.invc[i];
        tb.invc[0] = _mm256_loadu_ps(c), tb.invc[1] = _mm256_loadu_ps(c + 8);
        split_table16(T.log2c, tb.log2c_lo, tb.log2c_hi);
        split_table16(T.exp2j, tb.exp2j_lo, tb.exp2j_hi);
        return tb;
    }
    // Entry i of t for i in bits 2-0 of idx's lanes, bit 3 in the sign bit of sel's.
    static __m256 lookup16(const __m256 (&t)[2], __m256i idx, __m256 sel) {
        return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t[0], idx), _mm256_permutevar8x32_ps(t[1], idx), sel);
    }
    // The doubles of lanes 0-3 and 4-7 from the low and high 32 bits of lookups whose lanes
    // are lanes 0, 1, 4, 5, 2, 3, 6, 7 of x: unpcklps then gives lanes 0-3, unpckhps 4-7.
    static void join_halves(__m256 lo, __m256 hi, vd (&c)[2]) {
        c[0] = _mm256_castps_pd(_mm256_unpacklo_ps(lo, hi)), c[1] = _mm256_castps_pd(_mm256_unpackhi_ps(lo, hi));
    }
    // x's bits as those of a normal fp32 and the exponent to add: a subnormal's bits are its
    // value in units of 2^−149, an integer < 2^23, so vcvtdq2ps gives x·2^149 exactly (the
    // same mantissa as the double x; with DAZ too); 0 and −149 for the normal lanes (SUB false:
    // all of them).
    template <bool SUB>
    static __m256i normal_bits(vf x, __m256i & e_add) {
        const __m256i b = _mm256_castps_si256(x);
        e_add = _mm256_setzero_si256();
        if (!SUB) return b;
        const __m256i sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x00800000), b);
        e_add = _mm256_and_si256(sub, _mm256_set1_epi32(-149));
        return _mm256_blendv_epi8(b, _mm256_castps_si256(_mm256_cvtepi32_ps(b)), sub);
    }
    template <bool SUB>
    static void log_m_invc(vf x, const pow_tabs & tb, vd (&m)[2], vd (&c)[2]) {
        __m256i e_add;
        const __m256i b = normal_bits<SUB>(x, e_add);
        const __m256 m8 = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
        const __m256 c8 = lookup16(tb.invc, _mm256_srli_epi32(b, 23 - 4), _mm256_castsi256_ps(_mm256_slli_epi32(b, 9)));
        m[0] = d_lo(m8), m[1] = d_hi(m8);
        c[0] = d_lo(c8), c[1] = d_hi(c8);
    }
    template <bool SUB>
    static void log_e_log2c(vf x, const pow_tabs & tb, vd (&e)[2], vd (&c)[2]) {
        __m256i e_add;
        const __m256i b = normal_bits<SUB>(x, e_add);
        const __m256i e8 = _mm256_add_epi32(_mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127)), e_add);
        e[0] = _mm256_cvtepi32_pd(_mm256_castsi256_si128(e8)), e[1] = _mm256_cvtepi32_pd(_mm256_extracti128_si256(e8, 1));
        const __m256i bp = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7));
        const __m256i idx = _mm256_srli_epi32(bp, 23 - 4);
        const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(bp, 9));
        join_halves(lookup16(tb.log2c_lo, idx, sel), lookup16(tb.log2c_hi, idx, sel), c);
    }
    // The low 32 bits of kb0's and kb1's lanes side by side (shufps: lanes 0, 1 of kb0, 0, 1 of
    // kb1, then lanes 2, 3 of each), the order join_halves expects for kb0 then kb1.
    static void exp2j_pair(const pow_tabs & tb, vix kb0, vix kb1, vd & c0, vd & c1) {
        const __m256i idx = _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(kb0), _mm256_castsi256_ps(kb1), _MM_SHUFFLE(2, 0, 2, 0)));
        const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
        vd c[2];
        join_halves(lookup16(tb.exp2j_lo, idx, sel), lookup16(tb.exp2j_hi, idx, sel), c);
        c0 = c[0], c1 = c[1];
    }
    static constexpr int MD_UNROLL = 4; // 16 log chains and 8 exp chains of 4 doubles: spills, still 10% faster than 2

    static vf load_f16(const void * p) { return f16_widen_avx2(p); } // exact, signalling NaNs kept (f16_simd.h)
    static vf load_f16_quieted(const void * p) { return f16_widen_quieted_avx2(p); } // for arithmetic operands only (f16_simd.h)
    static void store_f16(void * p, vf x) { _mm_storeu_si128((__m128i *) p, _mm256_cvtps_ph(x, 0)); }

    static __m256i to_bf16_bits(vf x) {
        const __m256i bits = _mm256_castps_si256(x);
        const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
        const __m256i hi = _mm256_srli_epi32(bits, 16);
        const __m256i nan = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
        const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb), 16);
        return _mm256_blendv_epi8(rounded, nan, is_nan);
    }
    static vf load_bf16(const void * p) { return bf16_widen_avx2(p); } // exact (f16_simd.h)
    static void store_bf16(void * p, vf x) {
        const __m256i b = to_bf16_bits(x);
        _mm_storeu_si128((__m128i *) p, _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
    }

    static vf load_f64(const void * p) {
        const double * d = (const double *) p;
        const __m128 lo = _mm256_cvtpd_ps(_mm256_loadu_pd(d));
        const __m128 hi = _mm256_cvtpd_ps(_mm256_loadu_pd(d + 4));
        return _mm256_set_m128(hi, lo);
    }
    static void store_f64(void * p, vf x) {
        double * d = (double *) p;
        _mm256_storeu_pd(d, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        _mm256_storeu_pd(d + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }

    // fp32 -> fp8 codes (convert.h's rules) in 32-bit lanes. Normal results: rebias, then round
    // to nearest even by adding 0.5 ulp - 1 plus the kept lsb. Subnormal results: adding
    // 2^(bias-1+mantissa) in fp32 rounds |x| to the subnormal quantum (nearest even, the
    // default MXCSR mode), and the code is the low bits of the sum; this equals convert.h's
    // integer rule (with DAZ set, fp32 subnormals read as 0, which rounds to 0 as well).
    template <uint32_t MAN, uint32_t BIAS>
    static __m256i f8_codes(vf x, __m256i * sign, __m256i * abs) {
        const __m256i bits = _mm256_castps_si256(x);
        *sign = _mm256_and_si256(_mm256_srli_epi32(bits, 24), _mm256_set1_epi32(0x80));
        *abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
        constexpr uint32_t shift = 23 - MAN;
        const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(*abs, shift), _mm256_set1_epi32(1));
        __m256i n = _mm256_sub_epi32(*abs, _mm256_set1_epi32((int) ((127u - BIAS) << 23)));
        n = _mm256_add_epi32(_mm256_add_epi32(n, _mm256_set1_epi32((int) ((1u << (shift - 1)) - 1))), odd);
        n = _mm256_srli_epi32(n, shift);
        constexpr uint32_t magic = (127u - BIAS + 1 + (23 - MAN)) << 23; // 2^(1-bias+23-MAN): its ulp is the quantum
        const __m256 sum = _mm256_add_ps(_mm256_castsi256_ps(*abs), _mm256_castsi256_ps(_mm256_set1_epi32((int) magic)));
        const __m256i s = _mm256_sub_epi32(_mm256_castps_si256(sum), _mm256_set1_epi32((int) magic));
        const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32((int) ((128u - BIAS) << 23)), *abs);
        return _mm256_blendv_epi8(n, s, is_sub);
    }
    static void store_codes(void * p, __m256i c) {
        const __m256i w = _mm256_packus_epi32(c, c);
        const __m256i b = _mm256_packus_epi16(w, w);
        const uint32_t lo = (uint32_t) _mm_cvtsi128_si32(_mm256_castsi256_si128(b));
        const uint32_t hi = (uint32_t) _mm_cvtsi128_si32(_mm256_extracti128_si256(b, 1));
        const uint64_t v = (uint64_t) lo | ((uint64_t) hi << 32);
        std::memcpy(p, &v, 8);
    }
    static void store_f8_e4m3(void * p, vf x) {
        __m256i sign, abs;
        __m256i c = f8_codes<3, 7>(x, &sign, &abs);
        const __m256i big = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x43efffff)); // >= 480, Inf, NaN
        c = _mm256_blendv_epi8(c, _mm256_set1_epi32(0x7f), big);
        store_codes(p, _mm256_or_si256(c, sign));
    }
    static void store_f8_e5m2(void * p, vf x) {
        __m256i sign, abs;
        __m256i c = f8_codes<2, 15>(x, &sign, &abs);
        const __m256i inf = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x477fffff)); // >= 65536
        const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
        c = _mm256_blendv_epi8(c, _mm256_set1_epi32(0x7c), inf);
        c = _mm256_blendv_epi8(c, _mm256_set1_epi32(0x7f), nan);
        store_codes(p, _mm256_or_si256(c, sign));
    }

    // fp8 codes -> fp32, the table's values computed in lanes: normal codes by shifting the
    // exponent and mantissa into place and rebiasing; subnormal codes (mantissa × 2^(1-bias-MAN),
    // exact in fp32); NaN (and e5m2's Inf) codes by blending in the table's bit patterns.
    static vf load_f8_e4m3(const void * p) {
        const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) p));
        const __m256i mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7f));
        const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x80)), 24);
        const __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23));
        const __m256i sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0f / 512)));
        __m256i r = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
        r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7ff00000), _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
        return _mm256_castsi256_ps(_mm256_or_si256(r, sign));
    }
    static vf load_f8_e5m2(const void * p) {
        const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) p));
        const __m256i mag = _mm256_and_si256(x, _mm256_set1_epi32(0x7f));
        const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x80)), 24);
        const __m256i normal = _mm256_add_epi32(_mm256_slli_epi32(mag, 21), _mm256_set1_epi32(112 << 23));
        const __m256i sub = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(1.0f / 65536)));
        const __m256i quiet = _mm256_and_si256(_mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7c)), _mm256_set1_epi32(0x400000));
        const __m256i special = _mm256_or_si256(_mm256_or_si256(_mm256_set1_epi32(0x7f800000), _mm256_slli_epi32(_mm256_and_si256(mag, _mm256_set1_epi32(3)), 21)), quiet);
        __m256i r = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(_mm256_set1_epi32(4), mag));
        r = _mm256_blendv_epi8(r, special, _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7b)));
        return _mm256_castsi256_ps(_mm256_or_si256(r, sign));
    }

    static vf round_f16(vf x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, 0)); }
    static vf round_bf16(vf x) { return _mm256_castsi256_ps(_mm256_slli_epi32(to_bf16_bits(x), 16)); }

    // 8 entries (a << 8) | b gathered as 32-bit words (the table's padding covers the last
    // entry's), each cut to its low `size` bytes (the entry, little-endian) by a byte shuffle.
    template <size_t size>
    static void pair_gather(uint8_t * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table) {
        const __m256i ia = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) a));
        const __m256i ib = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) b));
        const __m256i g = _mm256_i32gather_epi32((const int *) table, _mm256_or_si256(_mm256_slli_epi32(ia, 8), ib), size);
        if (size == 1) {
            const __m256i c = _mm256_shuffle_epi8(g, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                                      0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
            const uint32_t lo = (uint32_t) _mm_cvtsi128_si32(_mm256_castsi256_si128(c));
            const uint32_t hi = (uint32_t) _mm_cvtsi128_si32(_mm256_extracti128_si256(c, 1));
            const uint64_t v = (uint64_t) lo | ((uint64_t) hi << 32);
            std::memcpy(dst, &v, 8);
        } else if (size == 2) {
            const __m256i c = _mm256_shuffle_epi8(g, _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                                                      0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1));
            _mm_storeu_si128((__m128i *) dst, _mm256_castsi256_si128(_mm256_permute4x64_epi64(c, 0x08)));
        } else {
            _mm256_storeu_si256((__m256i *) dst, g);
        }
    }
};

constexpr merge_kernels table = simd_kernels<v_avx2>::table("avx2");

} // namespace

const merge_kernels * merge_kernels_avx2() { return &table; }

#else

#include "kernels.h"
const merge_kernels * merge_kernels_avx2() { return nullptr; }

#endif
