// The low-rank product with AVX-512 F/BW/VL + F16C (lowrank_simd.h). Compiled with those -m
// flags and without -mfma (and with -ffp-contract=off): every mul and add rounds on its own.
#include "lowrank.h"

#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "lowrank_simd.h"

namespace {

struct v_lowrank_avx512 {
    static constexpr size_t W = 16;
    static constexpr size_t NV = 4; // 4 rows × 4 accumulators + 4 down vectors + 1 broadcast of 32 zmm
    typedef __m512 vf;
    static vf loadu(const float * p) { return _mm512_loadu_ps(p); }
    static void storeu(float * p, vf x) { _mm512_storeu_ps(p, x); }
    static vf add(vf a, vf b) { return _mm512_add_ps(a, b); }
    static vf mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
    static vf set1(float x) { return _mm512_set1_ps(x); }
    static vf load_down_f16(const uint8_t * p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p)); }
    static vf load_down_bf16(const uint8_t * p) {
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *) p)), 16));
    }
    static vf load_down_f32(const uint8_t * p) { return _mm512_loadu_ps((const float *) p); }
};

} // namespace

bool lowrank_product_avx512(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n) {
    return lowrank_simd<v_lowrank_avx512>::run(f, cols, i0, m, out, tmp, tmp_n);
}

#else

bool lowrank_product_avx512(const lowrank_factors &, uint64_t, uint64_t, size_t, float *, float *, size_t) { return false; }

#endif
