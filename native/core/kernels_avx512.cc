// AVX-512 (F, BW, VL) + F16C kernels. AVX-512F has FMA instructions, so bit-identity with the
// scalar reference relies on -ffp-contract=off: mul and add stay separate instructions.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "f16_simd.h"
#include "kernels_simd.h"

namespace {

struct v_avx512 {
    static constexpr size_t W = 16;
    typedef __m512 vf;

    static vf loadu(const float * p) { return _mm512_loadu_ps(p); }
    static void storeu(float * p, vf x) { _mm512_storeu_ps(p, x); }
    static vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
    static vf sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
    static vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
    static vf set1(float x) { return _mm512_set1_ps(x); }

    // For the method kernels (method_kernels_simd.h): masks are mask registers. Only AVX-512F
    // instructions (no DQ: its float and/xor are done on integer lanes).
    typedef __mmask16 vm;
    static vf div(vf a, vf b) { return _mm512_div_ps(a, b); }
    static vf zero() { return _mm512_setzero_ps(); }
    static vm lt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
    static vm gt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
    static vm le(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
    static vm eq(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
    static vm unord(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
    static vm signbit(vf x) { return _mm512_test_epi32_mask(_mm512_castps_si512(x), _mm512_set1_epi32((int) 0x80000000u)); }
    static vm m_or(vm a, vm b) { return (vm) (a | b); }
    static bool all_lanes(vm m) { return m == 0xffff; }
    static vm m_andnot(vm a, vm b) { return (vm) (~a & b); }
    static vf blend(vm m, vf a, vf b) { return _mm512_mask_blend_ps(m, a, b); }
    static vf clear_sign(vf x) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff))); }
    static vf flip_sign(vf x) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int) 0x80000000u))); }

    // Every lane normal > 0, finite and not 1 (as bits: FLT_MIN's <= b < +Inf's, b != 1's;
    // b − FLT_MIN's < +Inf's − FLT_MIN's unsigned is the first two, for a negative lane too).
    static bool all_pow_general(vf x) {
        const __m512i b = _mm512_castps_si512(x);
        const __mmask16 ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(b, _mm512_set1_epi32(0x00800000)), _mm512_set1_epi32(0x7f000000)) &
                             _mm512_cmpneq_epi32_mask(b, _mm512_set1_epi32(0x3f800000));
        return ok == 0xffff;
    }
    typedef __m512d vd;
    typedef __mmask8 dm;
    static vd d_lo(vf x) { return _mm512_cvtps_pd(_mm512_castps512_ps256(x)); }
    static vd d_hi(vf x) { return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))); }
    static vf d_narrow(vd lo, vd hi) {
        const __m256 l = _mm512_cvtpd_ps(lo), h = _mm512_cvtpd_ps(hi);
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(l)), _mm256_castps_pd(h), 1));
    }
    static vd d_add(vd a, vd b) { return _mm512_add_pd(a, b); }
    static vd d_sub(vd a, vd b) { return _mm512_sub_pd(a, b); }
    static vd d_mul(vd a, vd b) { return _mm512_mul_pd(a, b); }
    static vd d_set1(double x) { return _mm512_set1_pd(x); }
    static vd d_min(vd a, vd b) { return _mm512_min_pd(a, b); }
    static vd d_max(vd a, vd b) { return _mm512_max_pd(a, b); }
    static vd d_floor(vd x) { return _mm512_roundscale_pd(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    // ⌊16x⌋/16 in one vrndscalepd (4 fraction bits kept)
    static vd d_floor16(vd x) { return _mm512_roundscale_pd(x, (4 << 4) | _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    // vgetexppd / vgetmantpd: the exponent and the mantissa in [1, 2) of a normal double,
    // exactly (one instruction each, where AVX2 needs shifts and masks).
    static vd d_exponent(vd x) { return _mm512_getexp_pd(x); }
    static vd d_mantissa(vd x) { return _mm512_getmant_pd(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero); }
    typedef __m512i vix;
    // Only the low 4 bits of an index count (vpermt2pd ignores the rest), so no masking.
    static vix d_top_bits(vd x, int b) { return _mm512_srli_epi64(_mm512_castpd_si512(x), 52 - b); }
    static vix d_int_bits_div16(vd k16) { return _mm512_castpd_si512(_mm512_add_pd(k16, _mm512_set1_pd(422212465065984.0))); } // see v_avx2
    // See v_avx2::d_scale_pow2_div16.
    static vd d_scale_pow2_div16(vd v, vix kb) {
        return _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(v), _mm512_slli_epi64(_mm512_andnot_si512(_mm512_set1_epi64(15), kb), 48)));
    }
    // A 16-entry table in two registers; bit 3 of the index picks one (a permute, not a gather).
    struct dtab {
        __m512d lo, hi;
    };
    static dtab d_table16(const double * t) { return dtab{_mm512_loadu_pd(t), _mm512_loadu_pd(t + 8)}; }
    static vd d_lookup(const dtab & t, vix i) { return _mm512_permutex2var_pd(t.lo, i, t.hi); }
    // The pow tables and their lookups (method_kernels_simd.h) on the widened doubles, where
    // getexp, getmant and a two-register permute are one instruction each.
    struct pow_tabs {
        dtab invc, log2c, exp2j;
    };
    static pow_tabs load_pow_tabs(const merge_pow_tables & T) { return pow_tabs{d_table16(T.invc), d_table16(T.log2c), d_table16(T.exp2j)}; }
    template <bool SUB>
    static void log_m_invc(vf x, const pow_tabs & tb, vd (&m)[2], vd (&c)[2]) {
        const vd h[2] = {d_lo(x), d_hi(x)}; // an fp32 subnormal is a normal double
        for (int k = 0; k < 2; k++) m[k] = d_mantissa(h[k]), c[k] = d_lookup(tb.invc, d_top_bits(h[k], merge_pow_tables::LOG_BITS));
    }
    template <bool SUB>
    static void log_e_log2c(vf x, const pow_tabs & tb, vd (&e)[2], vd (&c)[2]) {
        const vd h[2] = {d_lo(x), d_hi(x)};
        for (int k = 0; k < 2; k++) e[k] = d_exponent(h[k]), c[k] = d_lookup(tb.log2c, d_top_bits(h[k], merge_pow_tables::LOG_BITS));
    }
    static void exp2j_pair(const pow_tabs & tb, vix kb0, vix kb1, vd & c0, vd & c1) { c0 = d_lookup(tb.exp2j, kb0), c1 = d_lookup(tb.exp2j, kb1); }
    static constexpr int MD_UNROLL = 3; // 12 log chains and 6 exp chains of 8 doubles (2: 5% slower, 4: no faster)

    static vf load_f16(const void * p) { return f16_widen_avx512(p); } // exact, signalling NaNs kept (f16_simd.h)
    static vf load_f16_quieted(const void * p) { return f16_widen_quieted_avx512(p); } // for arithmetic operands only (f16_simd.h)
    static void store_f16(void * p, vf x) { _mm256_storeu_si256((__m256i *) p, _mm512_cvtps_ph(x, 0)); }

    static __m512i to_bf16_bits(vf x) {
        const __m512i bits = _mm512_castps_si512(x);
        const __mmask16 is_nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
        const __m512i hi = _mm512_srli_epi32(bits, 16);
        const __m512i nan = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
        const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
        const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb), 16);
        return _mm512_mask_blend_epi32(is_nan, rounded, nan);
    }
    static vf load_bf16(const void * p) { return bf16_widen_avx512(p); } // exact (f16_simd.h)
    static void store_bf16(void * p, vf x) { _mm256_storeu_si256((__m256i *) p, _mm512_cvtepi32_epi16(to_bf16_bits(x))); }

    static vf load_f64(const void * p) {
        const double * d = (const double *) p;
        const __m256 lo = _mm512_cvtpd_ps(_mm512_loadu_pd(d));
        const __m256 hi = _mm512_cvtpd_ps(_mm512_loadu_pd(d + 8));
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
    }
    static void store_f64(void * p, vf x) {
        double * d = (double *) p;
        _mm512_storeu_pd(d, _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
        _mm512_storeu_pd(d + 8, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))));
    }

    // See v_avx2::f8_codes: the same rule with mask registers.
    template <uint32_t MAN, uint32_t BIAS>
    static __m512i f8_codes(vf x, __m512i * sign, __m512i * abs) {
        const __m512i bits = _mm512_castps_si512(x);
        *sign = _mm512_and_si512(_mm512_srli_epi32(bits, 24), _mm512_set1_epi32(0x80));
        *abs = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
        constexpr uint32_t shift = 23 - MAN;
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(*abs, shift), _mm512_set1_epi32(1));
        __m512i n = _mm512_sub_epi32(*abs, _mm512_set1_epi32((int) ((127u - BIAS) << 23)));
        n = _mm512_add_epi32(_mm512_add_epi32(n, _mm512_set1_epi32((int) ((1u << (shift - 1)) - 1))), odd);
        n = _mm512_srli_epi32(n, shift);
        constexpr uint32_t magic = (127u - BIAS + 1 + (23 - MAN)) << 23;
        const __m512 sum = _mm512_add_ps(_mm512_castsi512_ps(*abs), _mm512_castsi512_ps(_mm512_set1_epi32((int) magic)));
        const __m512i s = _mm512_sub_epi32(_mm512_castps_si512(sum), _mm512_set1_epi32((int) magic));
        const __mmask16 is_sub = _mm512_cmplt_epi32_mask(*abs, _mm512_set1_epi32((int) ((128u - BIAS) << 23)));
        return _mm512_mask_blend_epi32(is_sub, n, s);
    }
    static void store_f8_e4m3(void * p, vf x) {
        __m512i sign, abs;
        __m512i c = f8_codes<3, 7>(x, &sign, &abs);
        c = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x43efffff)), c, _mm512_set1_epi32(0x7f));
        _mm_storeu_si128((__m128i *) p, _mm512_cvtepi32_epi8(_mm512_or_si512(c, sign)));
    }
    static void store_f8_e5m2(void * p, vf x) {
        __m512i sign, abs;
        __m512i c = f8_codes<2, 15>(x, &sign, &abs);
        c = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x477fffff)), c, _mm512_set1_epi32(0x7c));
        c = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f800000)), c, _mm512_set1_epi32(0x7f));
        _mm_storeu_si128((__m128i *) p, _mm512_cvtepi32_epi8(_mm512_or_si512(c, sign)));
    }

    // See v_avx2::load_f8_e4m3.
    static vf load_f8_e4m3(const void * p) {
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) p));
        const __m512i mag = _mm512_and_si512(x, _mm512_set1_epi32(0x7f));
        const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
        const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 20), _mm512_set1_epi32(120 << 23));
        const __m512i sub = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(1.0f / 512)));
        __m512i r = _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(8)), normal, sub);
        r = _mm512_mask_blend_epi32(_mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7f)), r, _mm512_set1_epi32(0x7ff00000));
        return _mm512_castsi512_ps(_mm512_or_si512(r, sign));
    }
    static vf load_f8_e5m2(const void * p) {
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) p));
        const __m512i mag = _mm512_and_si512(x, _mm512_set1_epi32(0x7f));
        const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
        const __m512i normal = _mm512_add_epi32(_mm512_slli_epi32(mag, 21), _mm512_set1_epi32(112 << 23));
        const __m512i sub = _mm512_castps_si512(_mm512_mul_ps(_mm512_cvtepi32_ps(mag), _mm512_set1_ps(1.0f / 65536)));
        const __m512i quiet = _mm512_maskz_mov_epi32(_mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7c)), _mm512_set1_epi32(0x400000));
        const __m512i special = _mm512_or_si512(_mm512_or_si512(_mm512_set1_epi32(0x7f800000), _mm512_slli_epi32(_mm512_and_si512(mag, _mm512_set1_epi32(3)), 21)), quiet);
        __m512i r = _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(mag, _mm512_set1_epi32(4)), normal, sub);
        r = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7b)), r, special);
        return _mm512_castsi512_ps(_mm512_or_si512(r, sign));
    }

    static vf round_f16(vf x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, 0)); }
    static vf round_bf16(vf x) { return _mm512_castsi512_ps(_mm512_slli_epi32(to_bf16_bits(x), 16)); }

    // 16 entries (a << 8) | b gathered as 32-bit words (the table's padding covers the last
    // entry's), each truncated to its low `size` bytes: the entry, little-endian.
    template <size_t size>
    static void pair_gather(uint8_t * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table) {
        const __m512i ia = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) a));
        const __m512i ib = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) b));
        const __m512i g = _mm512_i32gather_epi32(_mm512_or_si512(_mm512_slli_epi32(ia, 8), ib), (const void *) table, size);
        if (size == 1) _mm_storeu_si128((__m128i *) dst, _mm512_cvtepi32_epi8(g));
        else if (size == 2) _mm256_storeu_si256((__m256i *) dst, _mm512_cvtepi32_epi16(g));
        else _mm512_storeu_si512((void *) dst, g);
    }
};

constexpr merge_kernels table = simd_kernels<v_avx512>::table("avx512");

} // namespace

const merge_kernels * merge_kernels_avx512() { return &table; }

#else

#include "kernels.h"
const merge_kernels * merge_kernels_avx512() { return nullptr; }

#endif
