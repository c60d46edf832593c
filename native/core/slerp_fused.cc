#include "slerp_fused.h"

#include <cstring>
#include <limits>

#include "convert.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// GCC 12 warns on its own _mm512_cvtph_ps / _mm512_cvtps_ph (an undefined first operand), where they are inlined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

#if defined(__x86_64__) || defined(__i386__)

/** Element i of an F32 or F16 operand, widened exactly (st_f16_to_f32). */
template <bool F16>
inline float element(const uint8_t * p, size_t i) {
    if (F16) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        return st_f16_to_f32(h);
    }
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
}

/** Elements [i0, i1) one at a time, as many_kernels.cc combine and store_f16's tail do; whether one is a NaN or an infinity. */
template <bool A16, bool B16>
bool store_scalar(uint8_t * dst, const uint8_t * a, const uint8_t * b, float ca, float cb, size_t i0, size_t i1) {
    bool any = false;
    for (size_t i = i0; i < i1; i++) {
        float r = element<A16>(a, i) * ca + element<B16>(b, i) * cb;
        if (r != r) r = std::numeric_limits<float>::quiet_NaN(); // many_kernels.cc canonical
        const uint16_t h = st_f32_to_f16(r);
        std::memcpy(dst + 2 * i, &h, 2);
        any = any || (h & 0x7fff) >= 0x7c00;
    }
    return any;
}

/** Elements to store one by one before dst + 2·i is 64-byte aligned (none when dst is odd: no line is then whole). */
inline size_t head_elements(const uint8_t * dst, size_t n) {
    const uintptr_t at = (uintptr_t) dst;
    if (at & 1) return 0;
    const size_t head = (size_t) (((64 - (at & 63)) & 63) / 2);
    return head < n ? head : n;
}

// vcvtph2ps alone for F16 operands: each widened lane is only an operand of the product, and a
// product quiets a signalling NaN as the exact widening then the product would; any NaN result
// is made the canonical one anyway.
#define TM_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))
template <bool F16>
TM_AVX512 inline __m512 load_avx512(const uint8_t * p, size_t i) {
    if (F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *) (p + 2 * i)));
    return _mm512_loadu_ps((const void *) (p + 4 * i));
}

/** 16 elements from i: canonical(a·ca + b·cb) narrowed to fp16 (round to nearest even); lanes with an all-ones exponent are OR-ed into *any. */
template <bool A16, bool B16>
TM_AVX512 inline __m256i value_avx512(const uint8_t * a, const uint8_t * b, size_t i, __m512 ca, __m512 cb, __m256i * any) {
    const __m512 r = _mm512_add_ps(_mm512_mul_ps(load_avx512<A16>(a, i), ca), _mm512_mul_ps(load_avx512<B16>(b, i), cb));
    const __m512 c = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()), r);
    const __m256i h = _mm512_cvtps_ph(c, _MM_FROUND_TO_NEAREST_INT);
    *any = _mm256_or_si256(*any, _mm256_cmpgt_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7fff)), _mm256_set1_epi16(0x7bff)));
    return h;
}

template <bool A16, bool B16>
TM_AVX512 bool store_avx512(uint8_t * dst, const uint8_t * a, const uint8_t * b, float ca, float cb, size_t n) {
    const __m512 vca = _mm512_set1_ps(ca), vcb = _mm512_set1_ps(cb);
    __m256i any = _mm256_setzero_si256();
    const size_t head = head_elements(dst, n);
    bool any_scalar = store_scalar<A16, B16>(dst, a, b, ca, cb, 0, head);
    size_t i = head;
    if (((uintptr_t) dst & 1) == 0) {
        for (; i + 32 <= n; i += 32) {
            const __m256i h0 = value_avx512<A16, B16>(a, b, i, vca, vcb, &any), h1 = value_avx512<A16, B16>(a, b, i + 16, vca, vcb, &any);
            _mm512_stream_si512((__m512i *) (dst + 2 * i), _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1));
        }
        _mm_sfence(); // the window is handed to the writer thread after this call
    }
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *) (dst + 2 * i), value_avx512<A16, B16>(a, b, i, vca, vcb, &any));
    any_scalar = store_scalar<A16, B16>(dst, a, b, ca, cb, i, n) || any_scalar;
    return any_scalar || !_mm256_testz_si256(any, any);
}

#define TM_AVX2 __attribute__((target("avx2,f16c")))
template <bool F16>
TM_AVX2 inline __m256 load_avx2(const uint8_t * p, size_t i) {
    if (F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (p + 2 * i)));
    return _mm256_loadu_ps((const float *) (const void *) (p + 4 * i));
}

/** 8 elements from i (value_avx512's steps). */
template <bool A16, bool B16>
TM_AVX2 inline __m128i value_avx2(const uint8_t * a, const uint8_t * b, size_t i, __m256 ca, __m256 cb, __m128i * any) {
    const __m256 r = _mm256_add_ps(_mm256_mul_ps(load_avx2<A16>(a, i), ca), _mm256_mul_ps(load_avx2<B16>(b, i), cb));
    const __m256 c = _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
    const __m128i h = _mm256_cvtps_ph(c, _MM_FROUND_TO_NEAREST_INT);
    *any = _mm_or_si128(*any, _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7bff)));
    return h;
}

template <bool A16, bool B16>
TM_AVX2 bool store_avx2(uint8_t * dst, const uint8_t * a, const uint8_t * b, float ca, float cb, size_t n) {
    const __m256 vca = _mm256_set1_ps(ca), vcb = _mm256_set1_ps(cb);
    __m128i any = _mm_setzero_si128();
    const size_t head = head_elements(dst, n);
    bool any_scalar = store_scalar<A16, B16>(dst, a, b, ca, cb, 0, head);
    size_t i = head;
    if (((uintptr_t) dst & 1) == 0) {
        for (; i + 32 <= n; i += 32) {
            const __m128i h0 = value_avx2<A16, B16>(a, b, i, vca, vcb, &any), h1 = value_avx2<A16, B16>(a, b, i + 8, vca, vcb, &any);
            const __m128i h2 = value_avx2<A16, B16>(a, b, i + 16, vca, vcb, &any), h3 = value_avx2<A16, B16>(a, b, i + 24, vca, vcb, &any);
            _mm256_stream_si256((__m256i *) (dst + 2 * i), _mm256_set_m128i(h1, h0));
            _mm256_stream_si256((__m256i *) (dst + 2 * i + 32), _mm256_set_m128i(h3, h2));
        }
        _mm_sfence();
    }
    for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *) (dst + 2 * i), value_avx2<A16, B16>(a, b, i, vca, vcb, &any));
    any_scalar = store_scalar<A16, B16>(dst, a, b, ca, cb, i, n) || any_scalar;
    return any_scalar || !_mm_testz_si128(any, any);
}

#define TM_SLERP_DISPATCH(name, kernel)                                                                                       \
    bool name(uint8_t * dst, const uint8_t * a, const uint8_t * b, bool a_f16, bool b_f16, float ca, float cb, size_t n) {   \
        if (a_f16) return b_f16 ? kernel<true, true>(dst, a, b, ca, cb, n) : kernel<true, false>(dst, a, b, ca, cb, n);      \
        return b_f16 ? kernel<false, true>(dst, a, b, ca, cb, n) : kernel<false, false>(dst, a, b, ca, cb, n);               \
    }
TM_SLERP_DISPATCH(slerp_store_f16_avx512, store_avx512)
TM_SLERP_DISPATCH(slerp_store_f16_avx2, store_avx2)
#undef TM_SLERP_DISPATCH
#undef TM_AVX512
#undef TM_AVX2

#endif

} // namespace

slerp_store_f16_fn slerp_store_f16_for(const char * isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa && std::strcmp(isa, "avx512") == 0) return slerp_store_f16_avx512;
    if (isa && std::strcmp(isa, "avx2") == 0) return slerp_store_f16_avx2;
#endif
    (void) isa;
    return nullptr;
}
