#include "kth_bracket.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "convert.h"
#include "dtype.h"
#include "f16_simd.h"
#include "reductions.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

kth_sample_plan kth_sample_plan_for(uint64_t n) {
    kth_sample_plan plan;
    const uint64_t n_blocks = (n + MERGE_REDUCTION_BLOCK - 1) / MERGE_REDUCTION_BLOCK;
    if (n_blocks == 0) return plan;
    plan.every = std::max<uint64_t>(1, (n_blocks * KTH_SAMPLE_RUN + KTH_MAX_SAMPLE - 1) / KTH_MAX_SAMPLE);
    const uint64_t sampled = (n_blocks + plan.every - 1) / plan.every;
    const uint64_t last = (sampled - 1) * plan.every; // every earlier sampled block is whole (≥ the run)
    plan.size = (sampled - 1) * KTH_SAMPLE_RUN + std::min<uint64_t>(KTH_SAMPLE_RUN, n - last * MERGE_REDUCTION_BLOCK);
    return plan;
}

void kth_sample_run(const kth_sample_plan & plan, uint64_t n, uint64_t b, uint64_t * first, uint64_t * count, uint64_t * at) {
    *count = 0;
    if (b % plan.every != 0) return;
    const uint64_t j = b / plan.every;
    const uint64_t b0 = b * MERGE_REDUCTION_BLOCK, len = std::min<uint64_t>(MERGE_REDUCTION_BLOCK, n - b0);
    // The run's offset steps through the block (29 is odd: all 64 offsets of a 4096-element
    // block in turn), so a matrix's sample is not one band of its columns.
    uint64_t offset = j * 29 % (MERGE_REDUCTION_BLOCK / KTH_SAMPLE_RUN) * KTH_SAMPLE_RUN;
    *count = std::min<uint64_t>(KTH_SAMPLE_RUN, len);
    if (offset + *count > len) offset = len - *count;
    *first = b0 + offset;
    *at = j * KTH_SAMPLE_RUN;
}

kth_bracket kth_bracket_from_sample(uint32_t * sample, uint64_t size, uint64_t n, uint64_t k) {
    kth_bracket br;
    br.capacity = n;
    if (size == 0) {
        br.lo = 0;
        return br;
    }
    // The sample's count of keys ≥ the true k-th is binomial(size, k/n): a margin of many
    // standard deviations (and a constant for the extremes) around the expected rank.
    const double p = (double) k / (double) n, s = (double) size;
    const double expected = p * s, margin = KTH_BRACKET_SIGMAS * std::sqrt(s * p * (1 - p)) + 32;
    const double upper_rank = std::floor(expected - margin), lower_rank = std::ceil(expected + margin); // ranks from the top, 1-based
    // The sample's keys in the top-11-bit bins that hold the two ranks move to the front (one
    // histogram, one pass), and nth_element orders only them: the lower bound first, then the
    // upper one among the keys at or above it.
    const bool has_lo = lower_rank <= s, has_hi = upper_rank >= 1;
    const uint64_t r_lo = has_lo ? (uint64_t) lower_rank : 0, r_hi = has_hi ? (uint64_t) upper_rank : 0;
    uint64_t hist[2048] = {};
    for (uint64_t e = 0; e < size; e++) hist[sample[e] >> 20]++;
    uint32_t bin_lo = 0, bin_hi = 2047;
    uint64_t above = 0, above_hi = 0; // sample keys above bin b, above bin_hi
    bool found_hi = !has_hi;
    for (uint32_t b = 2048; b-- > 0;) {
        if (!found_hi && above + hist[b] >= r_hi) {
            bin_hi = b;
            above_hi = above;
            found_hi = true;
        }
        if (has_lo && above + hist[b] >= r_lo) {
            bin_lo = b;
            break;
        }
        above += hist[b];
    }
    uint64_t count = 0;
    for (uint64_t e = 0; e < size; e++) {
        const uint32_t bin = sample[e] >> 20;
        if (bin >= bin_lo && bin <= bin_hi) sample[count++] = sample[e];
    }
    // Ranks inside the kept keys: the sample keys above bin_hi are not among them.
    uint64_t bottom = 0; // sample[bottom..count) holds the kept keys nth_element ordered at or above the lower bound
    if (has_lo) {
        const uint64_t at = count - (r_lo - above_hi);
        std::nth_element(sample, sample + at, sample + count);
        br.lo = sample[at];
        bottom = at + 1;
    } else {
        br.lo = 0;
    }
    if (has_hi) {
        const uint64_t at = count - (r_hi - above_hi); // ≥ bottom: r_hi < r_lo
        std::nth_element(sample + bottom, sample + at, sample + count);
        br.hi = sample[at];
    }
    // The expected count strictly inside, twice, plus room for a small tensor's spread.
    const double inside = (double) n * (std::min(lower_rank, s) - std::max(upper_rank, 0.0)) / s;
    br.capacity = (uint64_t) std::min<double>((double) n, 2 * inside + 4096);
    return br;
}

namespace {

inline uint32_t key_bits(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b & 0x7fffffffu;
}

size_t scan_scalar(const float * x, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside) {
    uint64_t above = 0, at_hi = 0, at_lo = 0;
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        const uint32_t k = key_bits(x[i]);
        above += k > hi;
        at_hi += k == hi;
        at_lo += k == lo;
        inside[w] = k; // always stored, kept only when inside: no branch
        w += (k > lo) & (k < hi);
    }
    c->above += above;
    c->at_hi += at_hi;
    c->at_lo += at_lo;
    return w;
}

#if defined(__x86_64__) || defined(__i386__)
// One ISA's bracket pass over whole vectors, on keys that `keys(i)` gives for elements [i, i + lanes):
// the plain scan loads them from fp32 slots, the fused one computes them from two fp16 or bf16 inputs. The
// counts and the keys inside come out the same either way. Returns the keys written; *done = the
// elements covered (the caller scans the last m mod lanes with scan_scalar, as the generic pass does).

// Unsigned compares by flipping the top bit (hi may be KTH_NO_UPPER); counts in int32 lanes
// (m ≤ a block: no overflow); the rare vector with keys inside is stored lane by lane in order.
template <class Keys>
__attribute__((target("avx2,f16c"))) inline size_t count_avx2(size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside, size_t * done, const Keys & keys) {
    const __m256i flip = _mm256_set1_epi32((int) 0x80000000u);
    const __m256i vlo = _mm256_set1_epi32((int) lo), vhi = _mm256_set1_epi32((int) hi);
    const __m256i flo = _mm256_xor_si256(vlo, flip), fhi = _mm256_xor_si256(vhi, flip);
    __m256i n_above = _mm256_setzero_si256(), n_hi = _mm256_setzero_si256(), n_lo = _mm256_setzero_si256();
    size_t w = 0, i = 0;
    for (; i + 8 <= m; i += 8) {
        const __m256i k = keys(i);
        const __m256i fk = _mm256_xor_si256(k, flip);
        n_above = _mm256_sub_epi32(n_above, _mm256_cmpgt_epi32(fk, fhi));
        n_hi = _mm256_sub_epi32(n_hi, _mm256_cmpeq_epi32(k, vhi));
        n_lo = _mm256_sub_epi32(n_lo, _mm256_cmpeq_epi32(k, vlo));
        const __m256i mid = _mm256_and_si256(_mm256_cmpgt_epi32(fk, flo), _mm256_cmpgt_epi32(fhi, fk));
        const unsigned bits = (unsigned) _mm256_movemask_ps(_mm256_castsi256_ps(mid));
        if (bits) {
            alignas(32) uint32_t lanes[8];
            _mm256_store_si256((__m256i *) lanes, k);
            for (int l = 0; l < 8; l++)
                if (bits >> l & 1) inside[w++] = lanes[l];
        }
    }
    alignas(32) uint32_t sums[3][8];
    _mm256_store_si256((__m256i *) sums[0], n_above);
    _mm256_store_si256((__m256i *) sums[1], n_hi);
    _mm256_store_si256((__m256i *) sums[2], n_lo);
    for (int l = 0; l < 8; l++) {
        c->above += sums[0][l];
        c->at_hi += sums[1][l];
        c->at_lo += sums[2][l];
    }
    *done = i;
    return w;
}

// Compress into a register, then a whole-vector store (a compressing store to memory is slow
// on some cores; inside has 16 keys of slack), every vector: with a few percent of the keys
// inside, a branch on "any inside" would mispredict often. Counts in masked int32 lanes.
template <class Keys>
__attribute__((target("avx512f,avx2,f16c"))) inline size_t count_avx512(size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside, size_t * done, const Keys & keys) {
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i vlo = _mm512_set1_epi32((int) lo), vhi = _mm512_set1_epi32((int) hi);
    __m512i n_above = _mm512_setzero_si512(), n_hi = _mm512_setzero_si512(), n_lo = _mm512_setzero_si512();
    size_t w = 0, i = 0;
    for (; i + 16 <= m; i += 16) {
        const __m512i k = keys(i);
        n_above = _mm512_mask_add_epi32(n_above, _mm512_cmpgt_epu32_mask(k, vhi), n_above, one);
        n_hi = _mm512_mask_add_epi32(n_hi, _mm512_cmpeq_epi32_mask(k, vhi), n_hi, one);
        n_lo = _mm512_mask_add_epi32(n_lo, _mm512_cmpeq_epi32_mask(k, vlo), n_lo, one);
        const __mmask16 mid = _mm512_cmpgt_epu32_mask(k, vlo) & _mm512_cmplt_epu32_mask(k, vhi);
        _mm512_storeu_si512((void *) (inside + w), _mm512_maskz_compress_epi32(mid, k));
        w += (size_t) __builtin_popcount((unsigned) mid);
    }
    alignas(64) uint32_t sums[3][16];
    _mm512_store_si512((void *) sums[0], n_above);
    _mm512_store_si512((void *) sums[1], n_hi);
    _mm512_store_si512((void *) sums[2], n_lo);
    for (int l = 0; l < 16; l++) {
        c->above += sums[0][l];
        c->at_hi += sums[1][l];
        c->at_lo += sums[2][l];
    }
    *done = i;
    return w;
}

/** Keys of fp32 slots, 8 or 16 at a time. */
struct f32_keys_avx2 {
    const float * x;
    __attribute__((target("avx2,f16c"))) __m256i operator()(size_t i) const {
        return _mm256_and_si256(_mm256_loadu_si256((const __m256i *) (x + i)), _mm256_set1_epi32(0x7fffffff));
    }
};
struct f32_keys_avx512 {
    const float * x;
    __attribute__((target("avx512f,avx2,f16c"))) __m512i operator()(size_t i) const {
        return _mm512_and_si512(_mm512_loadu_si512((const void *) (x + i)), _mm512_set1_epi32(0x7fffffff));
    }
};

__attribute__((target("avx2,f16c"))) size_t scan_avx2(const float * x, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside) {
    size_t i = 0;
    const size_t w = count_avx2(m, lo, hi, c, inside, &i, f32_keys_avx2{x});
    return w + scan_scalar(x + i, m - i, lo, hi, c, inside + w);
}

__attribute__((target("avx512f,avx2,f16c"))) size_t scan_avx512(const float * x, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside) {
    size_t i = 0;
    const size_t w = count_avx512(m, lo, hi, c, inside, &i, f32_keys_avx512{x});
    return w + scan_scalar(x + i, m - i, lo, hi, c, inside + w);
}

/** How a fused scan widens its 16-bit inputs, W lanes at a time and one element (the tail).
 * fp16: vcvtph2ps alone, each widened lane being a product's operand (f16_simd.h); bf16: the
 * 16-bit shift (exact). The scalar widenings are simd_kernels::load_f16's and load_bf16's tails. */
struct widen_f16 {
    __attribute__((target("avx2,f16c"))) static __m256 avx2(const uint8_t * p) { return f16_widen_quieted_avx2(p); }
    __attribute__((target("avx512f,avx2,f16c"))) static __m512 avx512(const uint8_t * p) { return f16_widen_quieted_avx512(p); }
    static float scalar(uint16_t h) { return st_f16_to_f32(h); }
};
struct widen_bf16 {
    __attribute__((target("avx2,f16c"))) static __m256 avx2(const uint8_t * p) { return bf16_widen_avx2(p); }
    __attribute__((target("avx512f,avx2,f16c"))) static __m512 avx512(const uint8_t * p) { return bf16_widen_avx512(p); }
    static float scalar(uint16_t h) { return st_bf16_to_f32(h); }
};

/** Keys of x = a·p0 + b·p1 over two 16-bit float inputs (weighted_sum's two products and one sum,
 * never fused: -ffp-contract=off), computed per vector, so no scratch slot is written or read. */
template <class Widen> struct half_sum_keys_avx2 {
    const uint8_t * a;
    const uint8_t * b;
    float p0, p1;
    __attribute__((target("avx2,f16c"))) __m256i operator()(size_t i) const {
        const __m256 x = _mm256_add_ps(_mm256_mul_ps(Widen::avx2(a + 2 * i), _mm256_set1_ps(p0)), _mm256_mul_ps(Widen::avx2(b + 2 * i), _mm256_set1_ps(p1)));
        return _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff));
    }
};
template <class Widen> struct half_sum_keys_avx512 {
    const uint8_t * a;
    const uint8_t * b;
    float p0, p1;
    __attribute__((target("avx512f,avx2,f16c"))) __m512i operator()(size_t i) const {
        const __m512 x = _mm512_add_ps(_mm512_mul_ps(Widen::avx512(a + 2 * i), _mm512_set1_ps(p0)), _mm512_mul_ps(Widen::avx512(b + 2 * i), _mm512_set1_ps(p1)));
        return _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff));
    }
};

/** The last elements [i, m) of a fused scan as simd_kernels' load tails and weighted_sum's scalar tail. */
template <class Widen>
size_t scan_half_sum_tail(const uint8_t * a, const uint8_t * b, float p0, float p1, size_t i, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * c, uint32_t * inside) {
    float x[16];
    for (size_t e = 0; i + e < m; e++) {
        uint16_t ha, hb;
        std::memcpy(&ha, a + 2 * (i + e), 2);
        std::memcpy(&hb, b + 2 * (i + e), 2);
        const float xa = Widen::scalar(ha) * p0;
        const float xb = Widen::scalar(hb) * p1;
        x[e] = xa + xb;
    }
    return scan_scalar(x, m - i, lo, hi, c, inside);
}

template <class Widen>
__attribute__((target("avx512f,avx2,f16c"))) size_t scan_half_sum_avx512(const uint8_t * a, const uint8_t * b, float p0, float p1, size_t m, uint32_t lo, uint32_t hi,
                                                                         kth_bracket_counts * c, uint32_t * inside) {
    size_t i = 0;
    const size_t w = count_avx512(m, lo, hi, c, inside, &i, half_sum_keys_avx512<Widen>{a, b, p0, p1});
    return w + scan_half_sum_tail<Widen>(a, b, p0, p1, i, m, lo, hi, c, inside + w);
}

template <class Widen>
__attribute__((target("avx2,f16c"))) size_t scan_half_sum_avx2(const uint8_t * a, const uint8_t * b, float p0, float p1, size_t m, uint32_t lo, uint32_t hi,
                                                              kth_bracket_counts * c, uint32_t * inside) {
    size_t i = 0;
    const size_t w = count_avx2(m, lo, hi, c, inside, &i, half_sum_keys_avx2<Widen>{a, b, p0, p1});
    return w + scan_half_sum_tail<Widen>(a, b, p0, p1, i, m, lo, hi, c, inside + w);
}

template <class Widen> kth_bracket_scan_half_sum_fn scan_half_sum_for(const char * isa) {
    if (isa && std::strcmp(isa, "avx512") == 0) return scan_half_sum_avx512<Widen>;
    if (isa && std::strcmp(isa, "avx2") == 0) return scan_half_sum_avx2<Widen>;
    return nullptr;
}
#endif

} // namespace

kth_bracket_scan_half_sum_fn kth_bracket_scan_half_sum_for(const char * isa, uint32_t dtype) {
#if defined(__x86_64__) || defined(__i386__)
    if (dtype == ST_DTYPE_F16) return scan_half_sum_for<widen_f16>(isa);
    if (dtype == ST_DTYPE_BF16) return scan_half_sum_for<widen_bf16>(isa);
#else
    (void) isa;
    (void) dtype;
#endif
    return nullptr;
}

namespace {
uint32_t select_in_range(uint32_t * keys, uint64_t n, uint64_t k, uint32_t base, int width);
int bit_width(uint32_t v);
} // namespace

kth_bracket_scan_fn kth_bracket_scan_for(const char * isa) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa && std::strcmp(isa, "avx512") == 0) return scan_avx512;
    if (isa && std::strcmp(isa, "avx2") == 0) return scan_avx2;
#else
    (void) isa;
#endif
    return scan_scalar;
}

bool kth_bracket_resolve(const kth_bracket & br, const kth_bracket_counts & totals, uint32_t * inside, uint64_t inside_count, uint64_t k, uint32_t * key) {
    if (totals.above >= k) return false; // the k-th is above hi
    uint64_t t = k - totals.above;
    if (t <= totals.at_hi) {
        *key = br.hi;
        return true;
    }
    t -= totals.at_hi;
    if (br.lo == br.hi) return false; // nothing else inside: the k-th is below lo
    if (t <= inside_count) {
        if (inside_count > br.capacity) return false; // the buffer did not hold them all
        // Keys inside are in (lo, hi): ranked on key − lo, a range of a few percent of the key.
        const uint32_t top = br.hi == KTH_NO_UPPER ? 0x7fffffffu : br.hi - 1;
        *key = select_in_range(inside, inside_count, t, br.lo, bit_width(top - br.lo));
        return true;
    }
    t -= inside_count;
    if (t <= totals.at_lo) {
        *key = br.lo;
        return true;
    }
    return false; // below lo
}

namespace {

int bit_width(uint32_t v) { return v == 0 ? 0 : 32 - __builtin_clz(v); }

/**
 * The k-th largest of keys[0, n) (1 <= k <= n), every key in [base, base + 2^width): a radix
 * select on key − base, digits of at most 11 bits from the top. Each digit's histogram picks the
 * bin holding the k-th largest; the keys of that bin move to the front (the write index never
 * passes the read index) and the next digit ranks only them. Overwrites keys. A narrow range
 * (a bracket's keys) takes one or two digits where the whole key range takes three.
 */
uint32_t select_in_range(uint32_t * keys, uint64_t n, uint64_t k, uint32_t base, int width) {
    uint32_t prefix = 0;
    uint64_t count = n;
    for (;;) {
        const int shift = width > 11 ? width - 11 : 0;
        const uint32_t size = 1u << (width - shift), mask = size - 1;
        uint64_t hist[2048] = {};
        for (uint64_t e = 0; e < count; e++) hist[((keys[e] - base) >> shift) & mask]++;
        uint64_t above = 0;
        uint32_t bin = 0;
        for (uint32_t b = size; b-- > 0;) {
            if (above + hist[b] >= k) {
                bin = b;
                break;
            }
            above += hist[b];
        }
        k -= above;
        prefix |= bin << shift;
        if (shift == 0) return base + prefix;
        uint64_t w = 0;
        for (uint64_t e = 0; e < count; e++)
            if ((((keys[e] - base) >> shift) & mask) == bin) keys[w++] = keys[e];
        count = w;
        width = shift;
    }
}

} // namespace

uint32_t kth_select_kept_keys(uint32_t * keys, uint64_t n, uint64_t k) { return select_in_range(keys, n, k, 0, 31); }
