// AVX2 + F16C kernels. Compiled with -mavx2 -mf16c and without -mfma (and with
// -ffp-contract=off), so every mul and add rounds separately, like the scalar reference.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "kernels_simd.h"

namespace {

struct v_avx2 {
    static constexpr size_t W = 8;
    typedef __m256 vf;

    static vf loadu(const float * p) { return _mm256_loadu_ps(p); }
    static void storeu(float * p, vf x) { _mm256_storeu_ps(p, x); }
    static vf add(vf a, vf b) { return _mm256_add_ps(a, b); }
    static vf sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
    static vf mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
    static vf set1(float x) { return _mm256_set1_ps(x); }

    // vcvtph2ps quiets signalling NaNs; the contract widens exactly, so clear the quiet bit
    // again in lanes whose input was a signalling NaN (rare: tested on the 16-bit lanes first).
    static vf load_f16(const void * p) {
        const __m128i h = _mm_loadu_si128((const __m128i *) p);
        const __m256 f = _mm256_cvtph_ps(h);
        const __m128i is_nan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
        const __m128i is_quiet = _mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x0200)), _mm_set1_epi16(0x0200));
        const __m128i snan = _mm_andnot_si128(is_quiet, is_nan);
        if (_mm_testz_si128(snan, snan)) return f;
        const __m256i fix = _mm256_and_si256(_mm256_cvtepi16_epi32(snan), _mm256_set1_epi32(0x00400000));
        return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(f), fix));
    }
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
    static vf load_bf16(const void * p) {
        const __m128i h = _mm_loadu_si128((const __m128i *) p);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
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

    static vf round_f16(vf x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, 0)); }
    static vf round_bf16(vf x) { return _mm256_castsi256_ps(_mm256_slli_epi32(to_bf16_bits(x), 16)); }
};

constexpr merge_kernels table = simd_kernels<v_avx2>::table("avx2");

} // namespace

const merge_kernels * merge_kernels_avx2() { return &table; }

#else

#include "kernels.h"
const merge_kernels * merge_kernels_avx2() { return nullptr; }

#endif
