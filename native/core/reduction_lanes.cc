#include "reduction_lanes.h"

#include <cstring>

#include "reductions.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

static_assert(MERGE_REDUCTION_LANES == 8, "the SIMD lane sums hold the 8 lanes in one AVX-512 or two AVX2 registers");
constexpr size_t lanes_n = MERGE_REDUCTION_LANES;
/** Reductions summed side by side in registers (SLERP has 3; more are done in groups). */
constexpr size_t group_max = 4;

/** The leftover elements (at a piece's end: m is a multiple of the lane count elsewhere). */
inline void lanes_tail(const float * x, const float * y, double * lanes, size_t e, size_t m) {
    for (; e < m; e++) lanes[e % lanes_n] += (double) x[e] * (double) y[e];
}

/** The reference: lane l takes elements ≡ l in order (what the SIMD paths compute, lane by lane). */
void lanes_scalar(size_t count, const float * const * x, const float * const * y, double * const * lanes, size_t m) {
    for (size_t r = 0; r < count; r++) {
        double * l = lanes[r];
        const float * a = x[r], * b = y[r];
        size_t e = 0;
        for (; e + lanes_n <= m; e += lanes_n)
            for (size_t k = 0; k < lanes_n; k++) l[k] += (double) a[e + k] * (double) b[e + k];
        lanes_tail(a, b, l, e, m);
    }
}

#if defined(__x86_64__) || defined(__i386__)
// One register of 8 double lanes per reduction: element e + k goes to lane k, converted exactly
// (cvtps2pd), multiplied (exact) and added (the one rounding), as the scalar loop does.
template <size_t G>
__attribute__((target("avx512f"))) void group_avx512(const float * const * x, const float * const * y, double * const * lanes, size_t m) {
    __m512d acc[G];
    for (size_t g = 0; g < G; g++) acc[g] = _mm512_loadu_pd(lanes[g]);
    size_t e = 0;
    for (; e + lanes_n <= m; e += lanes_n)
        for (size_t g = 0; g < G; g++) {
            // (maskz: GCC 12 warns on the unmasked form's undefined source register)
            const __m512d a = _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(x[g] + e)), b = _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(y[g] + e));
            acc[g] = _mm512_add_pd(acc[g], _mm512_mul_pd(a, b));
        }
    for (size_t g = 0; g < G; g++) {
        _mm512_storeu_pd(lanes[g], acc[g]);
        lanes_tail(x[g], y[g], lanes[g], e, m);
    }
}

// SLERP's a·b, a·a, b·b: each operand loaded and converted once (group_avx512<3> converts each
// six times in all: it cannot know that its pointers are the same two). The same lane sums.
__attribute__((target("avx512f"))) void pair_avx512(const float * a, const float * b, double * const * lanes, size_t m) {
    __m512d ab = _mm512_loadu_pd(lanes[0]), aa = _mm512_loadu_pd(lanes[1]), bb = _mm512_loadu_pd(lanes[2]);
    size_t e = 0;
    for (; e + lanes_n <= m; e += lanes_n) {
        const __m512d va = _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(a + e)), vb = _mm512_maskz_cvtps_pd(0xff, _mm256_loadu_ps(b + e));
        ab = _mm512_add_pd(ab, _mm512_mul_pd(va, vb));
        aa = _mm512_add_pd(aa, _mm512_mul_pd(va, va));
        bb = _mm512_add_pd(bb, _mm512_mul_pd(vb, vb));
    }
    _mm512_storeu_pd(lanes[0], ab);
    _mm512_storeu_pd(lanes[1], aa);
    _mm512_storeu_pd(lanes[2], bb);
    lanes_tail(a, b, lanes[0], e, m);
    lanes_tail(a, a, lanes[1], e, m);
    lanes_tail(b, b, lanes[2], e, m);
}

__attribute__((target("avx2"))) void pair_avx2(const float * a, const float * b, double * const * lanes, size_t m) {
    __m256d lo[3], hi[3];
    for (size_t g = 0; g < 3; g++) {
        lo[g] = _mm256_loadu_pd(lanes[g]);
        hi[g] = _mm256_loadu_pd(lanes[g] + 4);
    }
    size_t e = 0;
    for (; e + lanes_n <= m; e += lanes_n) {
        const __m256d a0 = _mm256_cvtps_pd(_mm_loadu_ps(a + e)), b0 = _mm256_cvtps_pd(_mm_loadu_ps(b + e));
        const __m256d a1 = _mm256_cvtps_pd(_mm_loadu_ps(a + e + 4)), b1 = _mm256_cvtps_pd(_mm_loadu_ps(b + e + 4));
        lo[0] = _mm256_add_pd(lo[0], _mm256_mul_pd(a0, b0));
        hi[0] = _mm256_add_pd(hi[0], _mm256_mul_pd(a1, b1));
        lo[1] = _mm256_add_pd(lo[1], _mm256_mul_pd(a0, a0));
        hi[1] = _mm256_add_pd(hi[1], _mm256_mul_pd(a1, a1));
        lo[2] = _mm256_add_pd(lo[2], _mm256_mul_pd(b0, b0));
        hi[2] = _mm256_add_pd(hi[2], _mm256_mul_pd(b1, b1));
    }
    for (size_t g = 0; g < 3; g++) {
        _mm256_storeu_pd(lanes[g], lo[g]);
        _mm256_storeu_pd(lanes[g] + 4, hi[g]);
    }
    lanes_tail(a, b, lanes[0], e, m);
    lanes_tail(a, a, lanes[1], e, m);
    lanes_tail(b, b, lanes[2], e, m);
}

/** The reductions are a·b, a·a, b·b (SLERP's statistics, in its order). */
inline bool is_pair(size_t count, const float * const * x, const float * const * y) {
    return count == 3 && x[1] == x[0] && y[1] == x[0] && x[2] == y[0] && y[2] == y[0];
}

// Lanes 0–3 in one register, 4–7 in the other.
template <size_t G>
__attribute__((target("avx2"))) void group_avx2(const float * const * x, const float * const * y, double * const * lanes, size_t m) {
    __m256d lo[G], hi[G];
    for (size_t g = 0; g < G; g++) {
        lo[g] = _mm256_loadu_pd(lanes[g]);
        hi[g] = _mm256_loadu_pd(lanes[g] + 4);
    }
    size_t e = 0;
    for (; e + lanes_n <= m; e += lanes_n)
        for (size_t g = 0; g < G; g++) {
            const __m256d a0 = _mm256_cvtps_pd(_mm_loadu_ps(x[g] + e)), b0 = _mm256_cvtps_pd(_mm_loadu_ps(y[g] + e));
            const __m256d a1 = _mm256_cvtps_pd(_mm_loadu_ps(x[g] + e + 4)), b1 = _mm256_cvtps_pd(_mm_loadu_ps(y[g] + e + 4));
            lo[g] = _mm256_add_pd(lo[g], _mm256_mul_pd(a0, b0));
            hi[g] = _mm256_add_pd(hi[g], _mm256_mul_pd(a1, b1));
        }
    for (size_t g = 0; g < G; g++) {
        _mm256_storeu_pd(lanes[g], lo[g]);
        _mm256_storeu_pd(lanes[g] + 4, hi[g]);
        lanes_tail(x[g], y[g], lanes[g], e, m);
    }
}

#define TM_LANES_GROUPS(name, group, pair)                                                                           \
    void name(size_t count, const float * const * x, const float * const * y, double * const * lanes, size_t m) {   \
        if (is_pair(count, x, y)) return pair(x[0], y[0], lanes, m);                                                 \
        for (size_t r = 0; r < count; r += group_max) {                                                              \
            switch (count - r < group_max ? count - r : group_max) {                                                 \
                case 1: group<1>(x + r, y + r, lanes + r, m); break;                                                  \
                case 2: group<2>(x + r, y + r, lanes + r, m); break;                                                  \
                case 3: group<3>(x + r, y + r, lanes + r, m); break;                                                  \
                default: group<4>(x + r, y + r, lanes + r, m); break;                                                 \
            }                                                                                                        \
        }                                                                                                            \
    }
TM_LANES_GROUPS(lanes_avx512, group_avx512, pair_avx512)
TM_LANES_GROUPS(lanes_avx2, group_avx2, pair_avx2)
#undef TM_LANES_GROUPS
#endif

} // namespace

reduction_lanes_fn reduction_lanes_for(const char * isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa && std::strcmp(isa, "avx512") == 0) return lanes_avx512;
    if (isa && std::strcmp(isa, "avx2") == 0) return lanes_avx2;
#endif
    return lanes_scalar;
}
