// fp16 and bf16 → fp32 widening of 8 (AVX2) or 16 (AVX-512) lanes.
//
// fp16, exact for every code: vcvtph2ps quiets
// signalling NaNs, so the quiet bit is cleared again in lanes whose input was a signalling NaN
// (rare: the 16-bit lanes are first tested for any NaN, the one test most vectors take, and only a
// vector with a NaN tells quiet from signalling). One definition for the merge kernels
// (kernels_avx2.cc, kernels_avx512.cc: built with those ISAs) and the fused k-th bracket pass
// (kth_bracket.cc: target attributes), so both widen with the same instructions.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx2,f16c"))) static inline __m256 f16_widen_avx2(const void * p) {
    const __m128i h = _mm_loadu_si128((const __m128i *) p);
    const __m256 f = _mm256_cvtph_ps(h);
    const __m128i is_nan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    if (_mm_testz_si128(is_nan, is_nan)) return f; // no NaN at all: the usual vector, 3 instructions of test
    const __m128i is_quiet = _mm_cmpeq_epi16(_mm_and_si128(h, _mm_set1_epi16(0x0200)), _mm_set1_epi16(0x0200));
    const __m128i snan = _mm_andnot_si128(is_quiet, is_nan);
    const __m256i fix = _mm256_and_si256(_mm256_cvtepi16_epi32(snan), _mm256_set1_epi32(0x00400000));
    return _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(f), fix));
}

// vcvtph2ps alone, a signalling NaN coming out quiet (quiet bit set, payload kept): only for
// callers whose every use of a widened lane is as an operand of an IEEE arithmetic operation
// (the fused TIES kernels: Mi − base, a·p0 + b·p1), which quiets a signalling NaN in exactly that
// way, so the bits that follow are those of the exact widening (test/methods/many/*-fused tests:
// signalling NaNs in every input).
__attribute__((target("avx2,f16c"))) static inline __m256 f16_widen_quieted_avx2(const void * p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) p)); }

// GCC 12 warns on its own _mm512_cvtph_ps / _mm512_cvtepi16_epi32 (an undefined first operand).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f,avx2,f16c"))) static inline __m512 f16_widen_avx512(const void * p) {
    const __m256i h = _mm256_loadu_si256((const __m256i *) p);
    const __m512 f = _mm512_cvtph_ps(h);
    const __m256i is_nan = _mm256_cmpgt_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7fff)), _mm256_set1_epi16(0x7c00));
    if (_mm256_testz_si256(is_nan, is_nan)) return f; // no NaN at all (see f16_widen_avx2)
    const __m256i is_quiet = _mm256_cmpeq_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x0200)), _mm256_set1_epi16(0x0200));
    const __m256i snan = _mm256_andnot_si256(is_quiet, is_nan);
    const __m512i fix = _mm512_and_si512(_mm512_cvtepi16_epi32(snan), _mm512_set1_epi32(0x00400000));
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(f), fix));
}
__attribute__((target("avx512f,avx2,f16c"))) static inline __m512 f16_widen_quieted_avx512(const void * p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) p)); }

// bf16: the upper half of an fp32, so a 16-bit shift, exact for every code (a signalling NaN
// stays signalling; the arithmetic that uses it quiets it as it would the slot's exact copy).
__attribute__((target("avx2,f16c"))) static inline __m256 bf16_widen_avx2(const void * p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *) p)), 16));
}
__attribute__((target("avx512f,avx2,f16c"))) static inline __m512 bf16_widen_avx512(const void * p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *) p)), 16));
}
#pragma GCC diagnostic pop
#endif
