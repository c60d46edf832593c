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
 * The series behind merge_powf, shared by the scalar and SIMD pow (constant data: no code runs
 * to build it, which matters for the SIMD objects). Constant-folded divisions are IEEE double
 * divisions, so these are the doubles the TypeScript twin computes at load.
 */
struct merge_pow_series {
    static constexpr int LN_TERMS = 12;  // ln(m) = 2s·Σ s^2k/(2k+1), |s| <= 0.1716: error < 1e-20
    static constexpr int EXP_TERMS = 17; // e^u = Σ u^j/j!, |u| <= ln2/2: error < 1e-22
    double inv_odd[LN_TERMS];
    double inv_fact[EXP_TERMS];
};

constexpr merge_pow_series merge_pow_series_make() {
    merge_pow_series s{};
    for (int k = 0; k < merge_pow_series::LN_TERMS; k++) s.inv_odd[k] = 1.0 / (double) (2 * k + 1);
    s.inv_fact[0] = 1.0;
    for (int j = 1; j < merge_pow_series::EXP_TERMS; j++) s.inv_fact[j] = s.inv_fact[j - 1] / (double) j;
    return s;
}

inline constexpr merge_pow_series MERGE_POW_SERIES = merge_pow_series_make();
constexpr double MERGE_POW_LN2 = 0.6931471805599453;
constexpr double MERGE_POW_SQRT2 = 1.4142135623730951;

/**
 * x^y for x >= 0 (NaN for x < 0), the same bits as `powF32` in method-kernels.ts: IEEE pow's
 * special cases, otherwise exp2(y·log2 x) in double with fixed series (no libm), rounded once
 * to fp32. Within one fp32 ulp of the exact value (test/native/method-kernels.test.ts).
 */
float merge_powf(float x, float y);
