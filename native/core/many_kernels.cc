#include "many_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "det_math.h"
#include "kernels.h"
#include "philox.h"
#include "task_merge_lanes.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace {

// The kernels are written once (the *_body functions) and compiled three times: for the
// baseline ISA and, through target attributes, for AVX2 and AVX-512, where the compiler
// vectorises the element loops. Element arithmetic is the same IEEE fp32 operation either way
// (no reassociation, no contraction: -ffp-contract=off), so every ISA writes the same bits.
// (TM_BODY, TM_BODY_LAMBDA: task_merge_lanes.h.)

/** Which philox4x32_10_groups a kernel body calls: 0 the portable loop, 1 AVX2, 2 AVX-512. */
template <int Isa>
void mask_words(uint32_t k0, uint32_t k1, uint32_t model, uint32_t name_hash, uint64_t g0, size_t count, uint32_t * out);

template <>
[[maybe_unused]] void mask_words<0>(uint32_t k0, uint32_t k1, uint32_t model, uint32_t name_hash, uint64_t g0, size_t count, uint32_t * out) {
    philox4x32_10_groups(k0, k1, model, name_hash, g0, count, out);
}

#if defined(__x86_64__) || defined(__i386__)
// Counters g .. g + LANES − 1 as (low word, high word) lanes, built in registers (not through
// a stack array: a vector load of freshly stored scalars stalls on store forwarding). The
// high word takes the carry of lanes whose low word wrapped.
__attribute__((target("avx2"))) inline void philox_counters_avx2(uint64_t g, __m256i * lo, __m256i * hi) {
    const __m256i base = _mm256_set1_epi32((int) (uint32_t) g), flip = _mm256_set1_epi32((int) 0x80000000u);
    const __m256i l = _mm256_add_epi32(base, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(base, flip), _mm256_xor_si256(l, flip)); // l < base, unsigned
    *lo = l;
    *hi = _mm256_sub_epi32(_mm256_set1_epi32((int) (uint32_t) (g >> 32)), wrapped);
}
__attribute__((target("avx512f"))) inline void philox_counters_avx512(uint64_t g, __m512i * lo, __m512i * hi) {
    const __m512i base = _mm512_set1_epi32((int) (uint32_t) g);
    const __m512i l = _mm512_add_epi32(base, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512i h = _mm512_set1_epi32((int) (uint32_t) (g >> 32));
    *lo = l;
    *hi = _mm512_mask_add_epi32(h, _mm512_cmplt_epu32_mask(l, base), h, _mm512_set1_epi32(1));
}
// Group l's four words w0..w3 go to out[4l .. 4l + 3]: a 4 × 4 transpose inside each 128-bit
// lane (unpack), then the lanes put in group order.
__attribute__((target("avx2"))) inline void philox_store_avx2(uint32_t * out, __m256i w0, __m256i w1, __m256i w2, __m256i w3) {
    const __m256i t0 = _mm256_unpacklo_epi32(w0, w1), t1 = _mm256_unpackhi_epi32(w0, w1);
    const __m256i t2 = _mm256_unpacklo_epi32(w2, w3), t3 = _mm256_unpackhi_epi32(w2, w3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2); // groups 4j, 4j + 1 of lane j
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3); // groups 4j + 2, 4j + 3
    _mm256_storeu_si256((__m256i *) out, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256((__m256i *) (out + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256((__m256i *) (out + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256((__m256i *) (out + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}
__attribute__((target("avx512f"))) inline void philox_store_avx512(uint32_t * out, __m512i w0, __m512i w1, __m512i w2, __m512i w3) {
    const __m512i t0 = _mm512_unpacklo_epi32(w0, w1), t1 = _mm512_unpackhi_epi32(w0, w1);
    const __m512i t2 = _mm512_unpacklo_epi32(w2, w3), t3 = _mm512_unpackhi_epi32(w2, w3);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2); // groups 4j, 4j + 1 of lane j
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3); // groups 4j + 2, 4j + 3
    const __m512i even01 = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)), odd01 = _mm512_shuffle_i32x4(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m512i even23 = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(2, 0, 2, 0)), odd23 = _mm512_shuffle_i32x4(u2, u3, _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_storeu_si512((void *) out, _mm512_shuffle_i32x4(even01, even23, _MM_SHUFFLE(2, 0, 2, 0)));        // groups 0–3
    _mm512_storeu_si512((void *) (out + 16), _mm512_shuffle_i32x4(odd01, odd23, _MM_SHUFFLE(2, 0, 2, 0)));   // groups 4–7
    _mm512_storeu_si512((void *) (out + 32), _mm512_shuffle_i32x4(even01, even23, _MM_SHUFFLE(3, 1, 3, 1))); // groups 8–11
    _mm512_storeu_si512((void *) (out + 48), _mm512_shuffle_i32x4(odd01, odd23, _MM_SHUFFLE(3, 1, 3, 1)));  // groups 12–15
}

// Philox4x32-10 over 8 (AVX2) or 16 (AVX-512) groups at once: u32 × u32 → u64 products of the
// even lanes, then of the odd lanes shifted down, blended back into low and high halves.
// Integer arithmetic: the words of the portable loop, bit for bit (test/methods/many/philox).
#define TM_PHILOX_SIMD(ISA, ATTR, VEC, LANES, SET1, COUNTERS, STORE4, MUL, SRLI, SLLI, XOR, BLEND, STOREU)                  \
    template <>                                                                                                \
    ATTR void mask_words<ISA>(uint32_t k0, uint32_t k1, uint32_t model, uint32_t name_hash, uint64_t g0, size_t count, uint32_t * out) { \
        constexpr uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;              \
        const VEC vm0 = SET1((int) m0), vm1 = SET1((int) m1);                                                   \
        for (size_t b0 = 0; b0 < count; b0 += LANES) {                                                          \
            VEC c0 = SET1(0), c1 = SET1(0), c2 = SET1((int) model), c3 = SET1((int) name_hash);                   \
            COUNTERS(g0 + b0, &c0, &c1);                                                                         \
            uint32_t ka = k0, kb = k1;                                                                           \
            for (int round = 0; round < 10; round++) {                                                           \
                if (round > 0) {                                                                                 \
                    ka += w0;                                                                                    \
                    kb += w1;                                                                                    \
                }                                                                                                \
                const VEC e0 = MUL(c0, vm0), o0 = MUL(SRLI(c0, 32), vm0);                                        \
                const VEC e1 = MUL(c2, vm1), o1 = MUL(SRLI(c2, 32), vm1);                                        \
                const VEC lo0 = BLEND(e0, SLLI(o0, 32)), hi0 = BLEND(SRLI(e0, 32), o0);                          \
                const VEC lo1 = BLEND(e1, SLLI(o1, 32)), hi1 = BLEND(SRLI(e1, 32), o1);                          \
                c0 = XOR(XOR(hi1, c1), SET1((int) ka));                                                          \
                c2 = XOR(XOR(hi0, c3), SET1((int) kb));                                                          \
                c1 = lo1;                                                                                        \
                c3 = lo0;                                                                                        \
            }                                                                                                    \
            if (count - b0 >= LANES) {                                                                           \
                STORE4(out + 4 * b0, c0, c1, c2, c3);                                                            \
                continue;                                                                                        \
            }                                                                                                    \
            alignas(64) uint32_t w[4][LANES];                                                                    \
            STOREU((void *) w[0], c0);                                                                           \
            STOREU((void *) w[1], c1);                                                                           \
            STOREU((void *) w[2], c2);                                                                           \
            STOREU((void *) w[3], c3);                                                                           \
            for (size_t l = 0; l < count - b0; l++)                                                              \
                for (int k = 0; k < 4; k++) out[4 * (b0 + l) + k] = w[k][l];                                     \
        }                                                                                                        \
    }

#define TM_BLEND256(a, b) _mm256_blend_epi32(a, b, 0xAA)
#define TM_STORE256(p, v) _mm256_storeu_si256((__m256i *) (p), v)
TM_PHILOX_SIMD(1, __attribute__((target("avx2"))), __m256i, 8, _mm256_set1_epi32, philox_counters_avx2, philox_store_avx2, _mm256_mul_epu32, _mm256_srli_epi64,
               _mm256_slli_epi64, _mm256_xor_si256, TM_BLEND256, TM_STORE256)
#define TM_BLEND512(a, b) _mm512_mask_blend_epi32((__mmask16) 0xAAAA, a, b)
TM_PHILOX_SIMD(2, __attribute__((target("avx512f"))), __m512i, 16, _mm512_set1_epi32, philox_counters_avx512, philox_store_avx512, _mm512_mul_epu32, _mm512_srli_epi64,
               _mm512_slli_epi64, _mm512_xor_si512, TM_BLEND512, _mm512_storeu_si512)
#endif

inline uint32_t magnitude_key(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b & 0x7fffffffu;
}

/** keep ? x : x·0 (what x·1 or x·0 gives, x·1 being x: d is never a signalling NaN), by bit masks: no branch. */
inline float keep_or_zero(bool keep, float x) {
    const float z = x * 0.0f;
    uint32_t bx, bz;
    std::memcpy(&bx, &x, 4);
    std::memcpy(&bz, &z, 4);
    const uint32_t m = 0u - (uint32_t) keep;
    const uint32_t b = (bx & m) | (bz & ~m);
    float r;
    std::memcpy(&r, &b, 4);
    return r;
}

inline float sign_of(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

/**
 * Every NaN these kernels store is the positive quiet NaN (0x7fc00000): with two NaN operands
 * of different signs (an input's NaN, and the −NaN of inf − inf or 0·inf) which one an addition
 * returns depends on the operand order the compiler or the JIT picked, so the bits could differ
 * between engines. NaN counts (MergeReport.nonFinite) are unchanged.
 */
inline float canonical(float v) { return v != v ? std::numeric_limits<float>::quiet_NaN() : v; }

/**
 * Generalised task arithmetic (mergekit generalized_task_arithmetic.py), per element:
 *   δj = Mj − base; TRIM: δj = δj·[key(δj) ≥ tj]; DROP: δj = δj·[word ≥ threshold j], then
 *   RESCALE: δj = δj / keep j; wδj = δj·wj;
 *   CONSENSUS: s = Σ wδj (or, BY_COUNT, Σ sign(wδj)), elected = s ≥ 0 ? 1 : −1,
 *     cj = [sign(wδj) = elected]; mixed = Σ wδj·cj; divisor = Σ wj·cj, 1 where it is 0;
 *   otherwise mixed = Σ wδj, divisor = Σ wj, 1 where |divisor| < 1e-8;
 *   NORMALIZE: mixed = mixed / divisor; r = base + mixed·λ.
 * Sums run j = 1..N in order, starting from the first term.
 *
 * This form loops over one model at a time on runs of 256 elements; task_merge_models below
 * does the same operations in one pass over the elements.
 */
template <int Isa>
TM_BODY void task_merge_runs(float * r, const merge_many_args & a, size_t n_total) {
    const uint32_t models = a.n_args - 1;
    const float * w = a.params;
    const float lambda = a.params[models];
    const float * keep = a.params + models + 1;
    const uint32_t flags = a.ints[0];
    const uint32_t * threshold = a.ints + 4;
    const bool trim = flags & TASK_MERGE_TRIM, drop = flags & TASK_MERGE_DROP, rescale = flags & TASK_MERGE_RESCALE;
    const bool consensus = flags & TASK_MERGE_CONSENSUS, by_count = flags & TASK_MERGE_BY_COUNT, normalize = flags & TASK_MERGE_NORMALIZE;
    uint32_t trim_key[MERGE_MAX_ARGS] = {};
    if (trim)
        for (uint32_t j = 0; j < models; j++) {
            // A key in [0, 2^31] (kth-magnitude); anything else (a job giving another statistic) keeps nothing.
            const double v = a.stats[j];
            trim_key[j] = v >= 0 && v <= 2147483648.0 ? (uint32_t) v : 2147483648u;
        }
    float divisor_all = 0;
    for (uint32_t j = 0; j < models; j++) divisor_all = j == 0 ? w[0] : divisor_all + w[j];
    if (std::fabs(divisor_all) < 1e-8f) divisor_all = 1;
    // Loops over one model at a time on short runs (vectorisable, no data-dependent branches);
    // each element still sees exactly the operations, in the order, of the comment above.
    constexpr size_t run = 256;
    float wd[MERGE_MAX_ARGS][run], s[run], divisor[run];
    uint32_t words[run + 8]; // a run's mask words: whole groups of four from the one holding its first element
    for (size_t i0 = 0; i0 < n_total; i0 += run) {
        const size_t n = n_total - i0 < run ? n_total - i0 : run;
        const float * base = a.x[0] + i0;
        float * out = r + i0;
        for (uint32_t j = 0; j < models; j++) {
            const float * m = a.x[j + 1] + i0;
            float * d = wd[j];
            for (size_t i = 0; i < n; i++) d[i] = m[i] - base[i];
            if (trim)
                for (size_t i = 0; i < n; i++) d[i] = keep_or_zero(magnitude_key(d[i]) >= trim_key[j], d[i]);
            if (drop) {
                const uint64_t e0 = a.index + i0, g0 = e0 >> 2;
                mask_words<Isa>(a.ints[1], a.ints[2], j, a.ints[3], g0, (size_t) (((e0 + n - 1) >> 2) - g0 + 1), words);
                const uint32_t * word = words + (e0 & 3); // element e's word: output[e & 3] of group e >> 2
                for (size_t i = 0; i < n; i++) d[i] = keep_or_zero(word[i] >= threshold[j], d[i]);
                if (rescale)
                    for (size_t i = 0; i < n; i++) d[i] = d[i] / keep[j];
            }
            for (size_t i = 0; i < n; i++) d[i] = d[i] * w[j];
        }
        if (consensus) {
            for (size_t i = 0; i < n; i++) s[i] = by_count ? sign_of(wd[0][i]) : wd[0][i];
            for (uint32_t j = 1; j < models; j++)
                for (size_t i = 0; i < n; i++) s[i] = s[i] + (by_count ? sign_of(wd[j][i]) : wd[j][i]);
            for (size_t i = 0; i < n; i++) s[i] = s[i] >= 0.0f ? 1.0f : -1.0f; // the elected sign
            for (uint32_t j = 0; j < models; j++) {
                for (size_t i = 0; i < n; i++) {
                    const float c = sign_of(wd[j][i]) == s[i] ? 1.0f : 0.0f;
                    out[i] = j == 0 ? wd[0][i] * c : out[i] + wd[j][i] * c;
                    divisor[i] = j == 0 ? w[0] * c : divisor[i] + w[j] * c;
                }
            }
            for (size_t i = 0; i < n; i++) divisor[i] = divisor[i] == 0.0f ? 1.0f : divisor[i];
        } else {
            for (size_t i = 0; i < n; i++) out[i] = wd[0][i];
            for (uint32_t j = 1; j < models; j++)
                for (size_t i = 0; i < n; i++) out[i] = out[i] + wd[j][i];
            for (size_t i = 0; i < n; i++) divisor[i] = divisor_all;
        }
        if (normalize)
            for (size_t i = 0; i < n; i++) out[i] = out[i] / divisor[i];
        for (size_t i = 0; i < n; i++) out[i] = canonical(base[i] + out[i] * lambda);
    }
}

/** task_merge_lanes (task_merge_lanes.h) on fp32 operands: the kernel for slots, every ISA. */
template <int W, uint32_t Models>
TM_BODY void task_merge_models(float * r, const merge_many_args & a, size_t n) {
    typedef typename tm_vec<W>::f F;
    const task_merge_lanes<W, Models> lanes(a);
    size_t i = 0;
    for (; i + W <= n; i += W) {
        const F v = lanes.step([&](uint32_t j) TM_BODY_LAMBDA { return tm_load<F>(a.x[j] + i); });
        std::memcpy(r + i, &v, sizeof v);
    }
    if (i < n) lanes.tail(n - i, [&](uint32_t j, size_t e) TM_BODY_LAMBDA { return a.x[j][i + e]; }, r + i);
}

/**
 * Without DROP, the one pass (the common model counts with their loops unrolled, any other count
 * with a loop): 0.91 → 0.54 ns per element for TIES on 3 models at AVX-512, 1.10 → 0.84 at AVX2
 * (bench/kernel_micro.cc). With DROP the Philox words dominate and the runs measured as fast or
 * faster (scalar: 9.9 against 17 ns), so DARE and DARE-TIES keep them.
 */
template <int Isa, int W>
TM_BODY void task_merge_body(float * r, const merge_many_args & a, size_t n) {
    if (a.ints[0] & TASK_MERGE_DROP) return task_merge_runs<Isa>(r, a, n);
    switch (a.n_args - 1) {
        case 2: return task_merge_models<W, 2>(r, a, n);
        case 3: return task_merge_models<W, 3>(r, a, n);
        case 4: return task_merge_models<W, 4>(r, a, n);
        default: return task_merge_models<W, 0>(r, a, n);
    }
}

/** r = a·ca + b·cb with fp32 coefficients (two products, one add: the weighted-sum order). */
TM_BODY void combine(float * r, const float * x, const float * y, float ca, float cb, size_t n) {
    for (size_t i = 0; i < n; i++) r[i] = canonical(x[i] * ca + y[i] * cb);
}

/**
 * Per tensor, from a·b, a·a, b·b (double). Variant 0 (mergekit slerp.py): norms ≤ 1e-8 count as
 * 1; dot = a·b/(|a||b|); |dot| > 0.9995 → (1−t)·a + t·b; else θ = acos dot, and the
 * unnormalised tensors get the coefficients:
 * r = a·sin((1−t)θ)/sin θ + b·sin(tθ)/sin θ. Variant 1 (sd-mecha slerp): dot clamped to [−1, 1],
 * ω = acos dot, r = (â·sin((1−t)ω) + b̂·sin(tω))/sin ω · ((1−t)|a| + t|b|); where that is not
 * finite (sin ω = 0, a zero norm) the weighted sum (1−t)·a + t·b, as sd-mecha falls back.
 */
void slerp_coefficients(const merge_many_args & a, float * out_a, float * out_b) {
    const double t = a.params[0];
    const double ab = a.stats[0], na = std::sqrt(a.stats[1]), nb = std::sqrt(a.stats[2]);
    double ca = 1 - t, cb = t;
    if (a.ints[0] == 0) {
        const double da = na > 1e-8 ? na : 1, db = nb > 1e-8 ? nb : 1;
        const double dot = ab / (da * db);
        if (!(std::fabs(dot) > 0.9995)) {
            const double theta = det_acos(dot < -1 ? -1 : (dot > 1 ? 1 : dot)), s = det_sin(theta);
            const double tt = theta * t;
            ca = det_sin(theta - tt) / s;
            cb = det_sin(tt) / s;
            if (!std::isfinite(ca) || !std::isfinite(cb)) ca = 1 - t, cb = t;
        }
    } else {
        double dot = ab / (na * nb);
        dot = dot < -1 ? -1 : (dot > 1 ? 1 : dot);
        const double omega = det_acos(dot), s = det_sin(omega);
        const double scale = (1 - t) * na + t * nb;
        const double xa = det_sin((1 - t) * omega) / s * scale / na, xb = det_sin(t * omega) / s * scale / nb;
        if (std::isfinite(xa) && std::isfinite(xb)) ca = xa, cb = xb;
    }
    *out_a = (float) ca;
    *out_b = (float) cb;
}

TM_BODY void slerp_body(float * r, const merge_many_args & a, size_t n) {
    float ca, cb;
    slerp_coefficients(a, &ca, &cb);
    combine(r, a.x[0], a.x[1], ca, cb, n);
}

/**
 * mergekit model_stock.py (filter_wise false): δi = Mi − base; cos_ij = clamp(δi·δj /
 * max(|δi||δj|, 1e-6), −1, 1); c = mean over i < j; t = N·c / (1 + (N−1)·c) (double, then fp32);
 * avg = (M1 + … + MN) / N; r = t·avg + (1 − t)·base.
 */
TM_BODY void model_stock_body(float * r, const merge_many_args & a, size_t n) {
    const uint32_t models = a.n_args - 1;
    double cos_sum = 0;
    uint32_t pairs = 0;
    size_t s = models;
    for (uint32_t i = 0; i < models; i++)
        for (uint32_t j = i + 1; j < models; j++) {
            const double norm = std::sqrt(a.stats[i]) * std::sqrt(a.stats[j]);
            double c = a.stats[s++] / (norm > 1e-6 ? norm : 1e-6);
            c = c < -1 ? -1 : (c > 1 ? 1 : c);
            cos_sum += c;
            pairs++;
        }
    const double c = cos_sum / pairs;
    float t = (float) (models * c / (1 + (models - 1) * c));
    // A NaN coefficient (a NaN or infinite statistic) is the positive quiet NaN in both engines:
    // the TS engine's doubles pass through JS arrays, which do not keep a NaN's sign.
    if (t != t) t = std::numeric_limits<float>::quiet_NaN();
    const float u = 1.0f - t, count = (float) models;
    for (size_t i = 0; i < n; i++) {
        float sum = a.x[1][i];
        for (uint32_t j = 1; j < models; j++) sum = sum + a.x[j + 1][i];
        r[i] = canonical(t * (sum / count) + u * a.x[0][i]);
    }
}

/**
 * sd-mecha add_cosine_a / add_cosine_b (merge_methods): a similarity per column of dim 0 (torch's
 * cosine_similarity(·, ·, dim=0): x·y / sqrt(max(‖x‖²‖y‖², 1e-16)), element e in column e mod C),
 * k = 1 − clamp(similarity − α, 0, 1), r = (1 − k)·a + k·b. Variant 0 (add_cosine_a) takes the
 * similarity of the columns normalised first (each divided by max(‖column‖, 1e-12)); variant 1
 * (add_cosine_b) averages the columns' cosine with the whole tensors' a·b / (‖a‖‖b‖).
 * Similarities and k are computed in double from the statistics, k rounded once to fp32.
 */
TM_BODY void add_cosine_body(float * r, const merge_many_args & a, size_t n) {
    const double alpha = a.params[0];
    const uint32_t variant = a.ints[0];
    const uint64_t columns = a.ints[1];
    const double * dot = a.columns[0], * aa = a.columns[1], * bb = a.columns[2];
    const double whole = variant == 1 ? a.stats[3] / (std::sqrt(a.stats[4]) * std::sqrt(a.stats[5])) : 0;
    uint64_t c = a.index % columns;
    for (size_t i = 0; i < n; i++) {
        double sim;
        if (variant == 0) {
            const double ma = std::max(std::sqrt(aa[c]), 1e-12), mb = std::max(std::sqrt(bb[c]), 1e-12);
            const double w12 = dot[c] / (ma * mb), w1 = aa[c] / (ma * ma), w2 = bb[c] / (mb * mb);
            sim = w12 / std::sqrt(std::max(w1 * w2, 1e-16));
        } else {
            sim = (dot[c] / std::sqrt(std::max(aa[c] * bb[c], 1e-16)) + whole) / 2;
        }
        const double d = sim - alpha;
        const float k = (float) (1 - (d < 0 ? 0 : (d > 1 ? 1 : d)));
        r[i] = canonical((1.0f - k) * a.x[0][i] + k * a.x[1][i]);
        if (++c == columns) c = 0;
    }
}

// task_merge_body<Isa> picks its mask generator; the other bodies take the level and ignore it.
#if defined(__x86_64__) || defined(__i386__)
#define TM_ISA_VARIANTS(name, body)                                                                            \
    void name##_scalar(float * r, const merge_many_args & a, size_t n) { body(0)(r, a, n); }                   \
    __attribute__((target("avx2,f16c"))) void name##_avx2(float * r, const merge_many_args & a, size_t n) {     \
        body(1)(r, a, n);                                                                                       \
    }                                                                                                           \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) void name##_avx512(float * r, const merge_many_args & a, size_t n) { \
        body(2)(r, a, n);                                                                                       \
    }
#else
#define TM_ISA_VARIANTS(name, body)                                                                            \
    void name##_scalar(float * r, const merge_many_args & a, size_t n) { body(0)(r, a, n); }                   \
    constexpr merge_many_fn name##_avx2 = name##_scalar, name##_avx512 = name##_scalar;
#endif
// Lanes of the fused task-merge loop: an SSE2 / NEON register for the baseline ISA.
#define TM_TASK_MERGE(level) task_merge_body<level, (level == 2 ? 16 : (level == 1 ? 8 : 4))>
#define TM_SLERP(level) slerp_body
#define TM_MODEL_STOCK(level) model_stock_body
#define TM_ADD_COSINE(level) add_cosine_body

TM_ISA_VARIANTS(task_merge, TM_TASK_MERGE)
TM_ISA_VARIANTS(slerp, TM_SLERP)
TM_ISA_VARIANTS(model_stock, TM_MODEL_STOCK)
TM_ISA_VARIANTS(add_cosine, TM_ADD_COSINE)

} // namespace

void merge_slerp_coefficients(const merge_many_args & a, float * ca, float * cb) { slerp_coefficients(a, ca, cb); }

merge_many_fn merge_many_kernel(uint32_t kernel, const char * isa) {
    const int level = isa && std::strcmp(isa, "avx512") == 0 ? 2 : (isa && std::strcmp(isa, "avx2") == 0 ? 1 : 0);
#define TM_PICK(name) return level == 2 ? name##_avx512 : (level == 1 ? name##_avx2 : name##_scalar)
    switch (kernel) {
        case MERGE_KERNEL_TASK_MERGE: TM_PICK(task_merge);
        case MERGE_KERNEL_SLERP: TM_PICK(slerp);
        case MERGE_KERNEL_MODEL_STOCK: TM_PICK(model_stock);
        case MERGE_KERNEL_ADD_COSINE: TM_PICK(add_cosine);
        default: return nullptr;
    }
#undef TM_PICK
}

bool merge_many_check(uint32_t kernel, size_t n_args, size_t n_params, size_t n_stats, const uint32_t * ints, size_t n_ints, std::string * why) {
    auto fail = [&](const std::string & m) {
        *why = std::string(merge_kernel_name(kernel)) + ": " + m;
        return false;
    };
    const std::string got = " (operands " + std::to_string(n_args) + ", params " + std::to_string(n_params) + ", stats " + std::to_string(n_stats) +
            ", ints " + std::to_string(n_ints) + ")";
    switch (kernel) {
        case MERGE_KERNEL_TASK_MERGE: {
            if (n_args < 2 || n_args > MERGE_MAX_ARGS) return fail("takes a base and 1 to " + std::to_string(MERGE_MAX_ARGS - 1) + " models" + got);
            const size_t models = n_args - 1;
            if (n_params != 2 * models + 1) return fail("takes one weight per model, lambda, one keep rate per model" + got);
            if (n_ints != 4 + models) return fail("takes ints flags, seed lo, seed hi, name hash, one drop threshold per model" + got);
            if (n_stats != ((ints[0] & TASK_MERGE_TRIM) ? models : 0)) return fail("takes one kth-magnitude stat per model with TRIM, none without" + got);
            if (ints[0] > 63) return fail("unknown flags " + std::to_string(ints[0]));
            return true;
        }
        case MERGE_KERNEL_SLERP:
            if (n_args != 2 || n_params != 1 || n_stats != 3 || n_ints != 1) return fail("takes operands a, b, param t, stats [a·b, a·a, b·b], ints [variant]" + got);
            return true;
        case MERGE_KERNEL_MODEL_STOCK: {
            if (n_args < 3 || n_args > MERGE_MAX_ARGS) return fail("takes a base and 2 to " + std::to_string(MERGE_MAX_ARGS - 1) + " models" + got);
            const size_t models = n_args - 1;
            if (n_params != 0 || n_ints != 0 || n_stats != models + models * (models - 1) / 2)
                return fail("takes stats [|δi|² for each model, then δi·δj for i < j]" + got);
            return true;
        }
        case MERGE_KERNEL_ADD_COSINE:
            if (n_args != 2 || n_params != 1 || n_ints != 2 || ints[1] == 0 || ints[0] > 1 || n_stats != (ints[0] == 1 ? 6u : 3u))
                return fail("takes operands a, b, param α, ints [variant, columns], stats [per-column a·b, a·a, b·b] (+ [a·b, a·a, b·b] for variant 1)" + got);
            return true;
        default: return fail("not a many-model kernel");
    }
}
