// The task merge without DROP (TIES, task arithmetic) over W fp32 lanes, written once for two
// callers: many_kernels.cc, on fp32 operands in scratch slots (every ISA, through target
// attributes), and kernels_simd.h, on fp16 inputs widened in registers and the result stored as
// fp16 (the output pass of TIES on fp16 models at AVX2 / AVX-512: no scratch slot). Each caller
// passes how a vector of operand j is made; the arithmetic per lane is the same either way, so the
// bits are too. In an anonymous namespace: each includer gets its own copy, compiled for its ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels.h"
#include "many_kernels.h"

#define TM_BODY inline __attribute__((always_inline))
#define TM_BODY_LAMBDA __attribute__((always_inline))

namespace {

// W fp32 lanes (GCC vector extensions: one SSE2 / NEON, AVX2 or AVX-512 register per
// vector). Lane arithmetic is the scalar IEEE operation; `x > y ? a : b` picks lane by lane (a bit select: no value is rounded or changed).
// (The helpers below take and return vectors wider than the baseline ABI's registers: they are
// always inlined into the ISA-targeted kernels, so no call passes one.)
#pragma GCC diagnostic ignored "-Wpsabi"
template <int W> struct tm_vec {
    typedef float f __attribute__((vector_size(4 * W)));
    typedef uint32_t u __attribute__((vector_size(4 * W)));
};

template <class V> TM_BODY V tm_load(const void * p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

/** sign(x) as ±1 or 0 (0 for a NaN), lane by lane. */
template <class F> TM_BODY F tm_sign(F x) {
    const F zero = {};
    const F r = x > 0.0f ? zero + 1.0f : zero;
    return x < 0.0f ? zero - 1.0f : r;
}

/**
 * many_kernels.cc's task_merge_runs operations (without DROP) in one pass per W elements, every
 * model's wδj in a register (there: one loop per model and per step over 256-element arrays, 10
 * passes through L1 for TIES on 3 models). "·[cond]" keeps δ where cond holds and is δ·0
 * elsewhere (an infinite δ gives NaN, as the multiplication does). Per lane the operations and
 * their order are task_merge_runs's, so W = 4, 8 and 16 write the same bits. Models > 0 makes the
 * model count a constant: the model loops unroll and each wδj stays in a register.
 */
template <int W, uint32_t Models>
struct task_merge_lanes {
    typedef typename tm_vec<W>::f F;
    typedef typename tm_vec<W>::u U;
    uint32_t models;
    const float * w;
    bool trim, consensus, by_count, normalize;
    uint32_t trim_key[MERGE_MAX_ARGS] = {};
    F zero = {}, one, minus_one, v_lambda, v_divisor_all, v_nan;

    TM_BODY explicit task_merge_lanes(const merge_many_args & a) : models(Models > 0 ? Models : a.n_args - 1), w(a.params) {
        const uint32_t flags = a.ints[0];
        trim = flags & TASK_MERGE_TRIM, consensus = flags & TASK_MERGE_CONSENSUS, by_count = flags & TASK_MERGE_BY_COUNT;
        normalize = flags & TASK_MERGE_NORMALIZE;
        if (trim)
            for (uint32_t j = 0; j < models; j++) {
                const double v = a.stats[j]; // as task_merge_runs
                trim_key[j] = v >= 0 && v <= 2147483648.0 ? (uint32_t) v : 2147483648u;
            }
        float divisor_all = 0;
        for (uint32_t j = 0; j < models; j++) divisor_all = j == 0 ? w[0] : divisor_all + w[j];
        if (std::fabs(divisor_all) < 1e-8f) divisor_all = 1;
        one = zero + 1.0f, minus_one = zero - 1.0f;
        v_lambda = zero + a.params[models], v_divisor_all = zero + divisor_all, v_nan = zero + std::numeric_limits<float>::quiet_NaN();
    }

    /** The result for W elements, operand(j) giving their values of operand j (0 the base, 1.. the models). */
    template <class Operand> TM_BODY F step(const Operand & operand) const {
        const F base = operand(0);
        F wd[Models > 0 ? Models : MERGE_MAX_ARGS - 1];
        wd[0] = zero; // (validation: at least one model)
        for (uint32_t j = 0; j < models; j++) {
            F d = operand(j + 1) - base;
            if (trim) d = ((U) d & 0x7fffffffu) >= trim_key[j] ? d : d * 0.0f;
            wd[j] = d * w[j];
        }
        F mixed = zero, divisor = zero;
        if (consensus) {
            F s = by_count ? tm_sign(wd[0]) : wd[0];
            for (uint32_t j = 1; j < models; j++) s = s + (by_count ? tm_sign(wd[j]) : wd[j]);
            const F elected = s >= 0.0f ? one : minus_one;
            for (uint32_t j = 0; j < models; j++) {
                const F c = tm_sign(wd[j]) == elected ? one : zero;
                mixed = j == 0 ? wd[0] * c : mixed + wd[j] * c;
                divisor = j == 0 ? w[0] * c : divisor + w[j] * c;
            }
            divisor = divisor == 0.0f ? one : divisor;
        } else {
            mixed = wd[0];
            for (uint32_t j = 1; j < models; j++) mixed = mixed + wd[j];
            divisor = v_divisor_all;
        }
        if (normalize) mixed = mixed / divisor;
        const F v = base + mixed * v_lambda;
        return v != v ? v_nan : v;
    }

    /**
     * The last m < W elements: value(j, e) (operand j's element e as fp32) copied into one
     * vector per operand padded with zeros, then out[e] for e < m.
     */
    template <class Value> TM_BODY void tail(size_t m, const Value & value, float * out) const {
        alignas(64) float lanes[MERGE_MAX_ARGS][W];
        for (uint32_t j = 0; j <= models; j++)
            for (size_t e = 0; e < W; e++) lanes[j][e] = e < m ? value(j, e) : 0.0f;
        const F r = step([&](uint32_t j) TM_BODY_LAMBDA { return tm_load<F>(lanes[j]); });
        std::memcpy(out, &r, m * sizeof(float));
    }
};

} // namespace
