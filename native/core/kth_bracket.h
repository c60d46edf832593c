// The k-th magnitude by a sampled bracket (reductions.h): one full pass instead of two, no
// histogram scatter per element and no key store.
//
// 1. Sample: the keys of a fixed run of KTH_SAMPLE_RUN elements in every kth_sample_plan::every-th
//    block of MERGE_REDUCTION_BLOCK elements (the run's offset in its block steps through the
//    block, so a sample is not one column of a matrix). The plan depends only on n: the same
//    sample whatever the threads or windows.
// 2. Bracket: from the sample's order statistics around rank k·s/n, keys lo ≤ hi such that the
//    exact k-th largest key lies in [lo, hi] unless the sample is very unrepresentative (a margin
//    of KTH_BRACKET_SIGMAS binomial standard deviations, plus a constant).
// 3. One full pass counts the keys > hi, = hi and = lo (integers: exact in any order) and copies
//    the keys strictly inside (lo, hi) into a bounded buffer (at most `capacity` per reduction).
// 4. Resolve: with t = k − #(> hi): t ≤ #(= hi) gives hi; else the (t − #(= hi))-th largest key
//    of the buffer (an exact radix select) when it falls inside; else lo when it falls on lo's
//    ties. A bracket that misses the k-th, or a buffer too small for the keys it must rank,
//    reports a miss, and the caller runs the exact two-pass radix select instead. Ties at lo and
//    hi are counted, never stored: a tensor with millions of equal magnitudes (zeros) at the
//    threshold needs no buffer.
// The result is the exact k-th largest key in every case: the bracket only decides how much work
// finding it takes.
#pragma once

#include <cstddef>
#include <cstdint>

constexpr uint64_t KTH_SAMPLE_RUN = 64;
/** At most this many sampled keys per reduction (so at most 1 MiB each). */
constexpr uint64_t KTH_MAX_SAMPLE = 1u << 18;
constexpr double KTH_BRACKET_SIGMAS = 8;
/** Default buffer budget, all k-th reductions of a piece together (engine.cc: TENSORMERGE_KTH_BRACKET_KEYS overrides the per-reduction cap). */
constexpr uint64_t KTH_BRACKET_BUDGET_BYTES = 16ull << 20;
/** hi when nothing bounds the k-th from above (no key, < 2^31, is above it or equal to it). */
constexpr uint32_t KTH_NO_UPPER = 0xffffffffu;

/** Which elements the sample holds (a function of n alone). */
struct kth_sample_plan {
    uint64_t every = 1; // sampled blocks: b % every == 0
    uint64_t size = 0;  // sampled keys in all
};
kth_sample_plan kth_sample_plan_for(uint64_t n);
/** The sampled elements of block b: [*first, *first + *count) (count 0 when b is not sampled), and their place in the sample. */
void kth_sample_run(const kth_sample_plan & plan, uint64_t n, uint64_t b, uint64_t * first, uint64_t * count, uint64_t * at);

struct kth_bracket {
    uint32_t lo = 0, hi = KTH_NO_UPPER;
    uint64_t capacity = 0; // buffer keys
};
/** The bracket for the k-th largest of n keys from `sample` (size keys; reordered). 1 ≤ k ≤ n. */
kth_bracket kth_bracket_from_sample(uint32_t * sample, uint64_t size, uint64_t n, uint64_t k);

/** Per reduction and thread: counts of one bracket pass. */
struct kth_bracket_counts {
    uint64_t above = 0, at_hi = 0, at_lo = 0;
};

/**
 * Scans the keys of x[0, m) (key = bits with the sign cleared): adds to the counts and writes
 * the keys strictly inside (lo, hi) to inside[0, returned) (inside has room for m + 16 keys: the
 * SIMD paths store whole vectors). `isa`: "scalar", "avx2", "avx512" (same counts and keys, in
 * the same order, at every ISA).
 */
typedef size_t (*kth_bracket_scan_fn)(const float * x, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * counts, uint32_t * inside);
kth_bracket_scan_fn kth_bracket_scan_for(const char * isa);

/**
 * The bracket pass of a k-th whose operand is the weighted sum a·p0 + b·p1 of two inputs of one
 * 16-bit float dtype, F16 or BF16 (TIES's task vector δ = M − base, merge_op WEIGHTED_SUM with
 * round F32): widens both, sums and scans in registers, where the generic pass widens into
 * scratch, sums into another slot and scans that (the same lanes: fp16 by vcvtph2ps, whose
 * quieting is the product's, f16_simd.h; bf16 by a shift, exact; one product per input, one addition, in
 * weighted_sum's order; the tail through st_f16_to_f32 / st_bf16_to_f32). Counts and keys are
 * scan_fn's on those values, in the same order. a and b need no alignment; inside has room for
 * m + 16 keys. nullptr where the ISA has none (scalar: the generic pass runs) or for another dtype.
 */
typedef size_t (*kth_bracket_scan_half_sum_fn)(const uint8_t * a, const uint8_t * b, float p0, float p1, size_t m, uint32_t lo, uint32_t hi, kth_bracket_counts * counts,
                                               uint32_t * inside);
kth_bracket_scan_half_sum_fn kth_bracket_scan_half_sum_for(const char * isa, uint32_t dtype);

/**
 * The k-th largest key from a pass's totals, or false (a miss: the caller selects exactly
 * another way). `inside`: the buffer (`stored` keys, stored ≤ capacity; reordered),
 * `inside_count`: how many keys the pass found strictly inside (may exceed the capacity).
 */
bool kth_bracket_resolve(const kth_bracket & br, const kth_bracket_counts & totals, uint32_t * inside, uint64_t inside_count, uint64_t k, uint32_t * key);

/** The k-th largest of keys[0, n) (1 ≤ k ≤ n), exactly (radix select, 11/10/10-bit digits). Overwrites keys. */
uint32_t kth_select_kept_keys(uint32_t * keys, uint64_t n, uint64_t k);
