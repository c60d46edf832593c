// Element-wise merge-method kernels beyond the classic three (kernels.h): train difference,
// triple sum, sum twice, multiply difference, similarity add difference, clamp.
//
// They are scalar code used by every ISA table, so their results cannot depend on the ISA;
// lib/engine/method-kernels.ts is the same code in TypeScript, statement for statement (fp32 via
// Math.fround, one rounding per operation in the written order, never fused). README "Merge
// methods" gives each formula and the published implementation it follows.
#pragma once

#include <cstddef>
#include <cstdint>

/**
 * r[i] = f(x[0][i], x[1][i], ..., p): `x` holds merge_kernel_arity(kernel) operand pointers,
 * `p` merge_kernel_n_params(kernel) parameters (checked by merge_job_validate).
 */
typedef void (*merge_method_fn)(float * r, const float * const * x, const float * p, size_t n);

/** The kernel for ids >= MERGE_KERNEL_TRAIN_DIFFERENCE; nullptr for the ISA-table kernels. */
merge_method_fn merge_method_kernel(uint32_t kernel);

/**
 * x^y for x >= 0 (NaN for x < 0), the same bits as `powF32` in method-kernels.ts: IEEE pow's
 * special cases, otherwise exp2(y·log2 x) in double with fixed series (no libm), rounded once
 * to fp32. Within one fp32 ulp of the exact value (test/native/method-kernels.test.ts).
 */
float merge_powf(float x, float y);
