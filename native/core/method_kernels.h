// Element-wise merge-method kernels beyond the classic three (kernels.h): train difference,
// triple sum, sum twice, multiply difference, similarity add difference, clamp.
//
// method_kernels.cc holds the scalar reference; method_kernels_simd.h the AVX2/AVX-512
// versions, which give the same bits (same operations in the same order, lane by lane, the same
// NaN and zero rules). lib/engine/method-kernels.ts is the scalar code in TypeScript, statement
// for statement (fp32 via Math.fround, one rounding per operation in the written order, never
// fused). README "Merge methods" gives each formula and the published implementation it follows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.h" // merge_method_fn, merge_kernels

/** The scalar kernel for ids >= MERGE_KERNEL_TRAIN_DIFFERENCE; nullptr for the ISA-table kernels. */
merge_method_fn merge_method_kernel(uint32_t kernel);

/**
 * The kernel of `kernels`' ISA for such an id (its SIMD version where it has one, the scalar
 * kernel otherwise); nullptr for the ISA-table kernels.
 */
merge_method_fn merge_method_kernel_for(const merge_kernels * kernels, uint32_t kernel);

/**
 * The tables behind merge_pow_product, shared by the scalar and SIMD code and
 * built the same way by lib/engine/det-math.ts (constant data: no code runs to build them, which
 * matters for the SIMD objects; constant-folded arithmetic is IEEE double arithmetic, so these
 * are the doubles the TypeScript twin computes at load).
 *
 * log2 x = e + log2(1/invc[i]) + log2(1 + r), r = m·invc[i] − 1, for x = m·2^e, m in [1, 2),
 * i the top LOG_BITS bits of m; invc[i] ≈ 1/(the middle of bin i) with 21 bits, so m·invc[i]
 * (24 + 21 bits) and r are exact and |r| < 1/31. 2^t = 2^⌊k/16⌋ · 2^((k mod 16)/16) · 2^f,
 * k = ⌊16t + ½⌋, f = t − k/16 (exact), |f| <= 1/32. log2c and exp2j come from long series
 * (error < 1e-25 before their double rounding). The short polynomials are Taylor series cut
 * where the result, rounded once to fp32, stays within 0.505 ulp of the exact value (see
 * merge_pow_product): log2(1 + r) errs by < |r|^6/(6·ln2) < 2^-31.8, 2^f by a relative
 * < (ln2/32)^5/5! < 2^-34.5. 16-entry tables: two AVX-512 registers or four AVX2 ones (a
 * permute, not a gather, looks an entry up).
 */
struct merge_pow_tables {
    static constexpr int LOG_BITS = 4, LOG_N = 1 << LOG_BITS;
    static constexpr int EXP_BITS = 4, EXP_N = 1 << EXP_BITS;
    static constexpr int LOG_TERMS = 5; // log2(1+r) = r·Σ (−1)^(n+1)/(n·ln2)·r^(n−1), n = 1..5
    static constexpr int EXP_TERMS = 5; // 2^f = Σ (f·ln2)^n/n!, n = 0..4, |f| <= 1/32
    double invc[LOG_N];
    double log2c[LOG_N]; // log2(1/invc[i])
    double exp2j[EXP_N]; // 2^(j/16)
    double logp[LOG_TERMS];
    double expp[EXP_TERMS]; // ln2^n/n!
};

constexpr double MERGE_POW_LN2 = 0.6931471805599453;

constexpr merge_pow_tables merge_pow_tables_make() {
    merge_pow_tables t{};
    for (int i = 0; i < merge_pow_tables::LOG_N; i++) {
        const double mid = 1.0 + ((double) i + 0.5) / (double) merge_pow_tables::LOG_N;
        const double v = (double) (long long) (1048576.0 / mid + 0.5) / 1048576.0;
        t.invc[i] = v;
        // ln v = 2s·Σ s^2k/(2k+1), s = (v−1)/(v+1), |s| < 1/3: 31 terms
        const double s = (v - 1.0) / (v + 1.0);
        const double z = s * s;
        double q = 1.0 / 61.0;
        for (int k = 29; k >= 0; k--) q = q * z + 1.0 / (double) (2 * k + 1);
        t.log2c[i] = -((2.0 * s * q) / MERGE_POW_LN2);
    }
    double inv_fact[29] = {1.0};
    for (int n = 1; n <= 28; n++) inv_fact[n] = inv_fact[n - 1] / (double) n;
    for (int j = 0; j < merge_pow_tables::EXP_N; j++) {
        const double u = ((double) j / (double) merge_pow_tables::EXP_N) * MERGE_POW_LN2;
        double w = inv_fact[28];
        for (int n = 27; n >= 0; n--) w = w * u + inv_fact[n];
        t.exp2j[j] = w;
    }
    for (int n = 1; n <= merge_pow_tables::LOG_TERMS; n++) t.logp[n - 1] = (n % 2 ? 1.0 : -1.0) / ((double) n * MERGE_POW_LN2);
    t.expp[0] = 1.0;
    for (int n = 1; n < merge_pow_tables::EXP_TERMS; n++) t.expp[n] = t.expp[n - 1] * MERGE_POW_LN2 / (double) n;
    return t;
}

inline constexpr merge_pow_tables MERGE_POW_TABLES = merge_pow_tables_make();

/**
 * x1^y1 · x2^y2 for fp32 x1, x2 >= 0 (a NaN factor for x < 0), rounded once to fp32: the same
 * bits as `powProductF32` in lib/engine/det-math.ts, and what multiply-difference computes
 * (|A−C|^(1−α)·|B−C|^α). An operand with y = 0 or x NaN, 0, ∞ or 1 is a factor with IEEE pow's
 * value (1, NaN, 0 or ∞, 1), multiplied in after; the others are exp2(y1·log2 x1 + y2·log2 x2)
 * in double with the tables above (no libm): one log per operand, one exp, one rounding.
 * Accuracy (test/native/pow-product.test.ts, millions of values against Math.pow in double):
 * within 0.505 fp32 ulp of the exact value (0.503 measured, α in [−0.5, 1.5]; the bound above:
 * < 2^-32 relative before the rounding), the correctly rounded value for 99.9% of them (two
 * pows and a product, as before, erred by up to 1.97 ulp, a third not correctly rounded). α = 0
 * or 1 gives |A − C| or |B − C| exactly. Edges: a sum ∞ − ∞ (non-finite y only) gives NaN.
 */
float merge_pow_product(float x1, float y1, float x2, float y2);
