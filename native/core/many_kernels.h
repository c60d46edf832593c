// Kernels over a base and several models, and kernels whose coefficients come from per-tensor
// statistics (task-merge for TIES / DARE / DARE-TIES, slerp, model-stock). Scalar code used by
// every ISA table; lib/engine/many-kernels.ts is the same code in TypeScript, operation for
// operation (fp32 element arithmetic, one rounding per operation, never fused; per-tensor
// coefficients in double from the statistics, with det_math.h for acos and sin).
// The operand, parameter, stats and ints layouts are in lib/native/job.ts (KERNELS comment).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct merge_many_args {
    const float * const * x; // operands
    uint32_t n_args;
    const float * params;
    uint32_t n_params;
    const double * stats; // reduction results, in JobOp.stats order
    uint32_t n_stats;
    const uint32_t * ints;
    uint32_t n_ints;
    uint64_t index; // element index (in the keyed tensor) of element 0 of this call
    const double * const * columns; // per stat: a per-column reduction's values (nullptr otherwise)
};

typedef void (*merge_many_fn)(float * r, const merge_many_args & a, size_t n);

/**
 * The kernel for MERGE_KERNEL_TASK_MERGE and later ids, compiled for `isa` (merge_kernels::isa:
 * "scalar", "avx2", "avx512"; the same bits at every ISA); nullptr for other ids.
 */
merge_many_fn merge_many_kernel(uint32_t kernel, const char * isa = "scalar");

/**
 * SLERP's fp32 coefficients of a and b for one tensor, from the op's parameter t, its stats
 * [a·b, a·a, b·b] and ints [variant]: its kernel's r = canonical(a·ca + b·cb) (slerp_fused.h
 * stores the same values straight as fp16).
 */
void merge_slerp_coefficients(const merge_many_args & a, float * ca, float * cb);

/**
 * Whether the counts of an op of a many kernel fit its layout; on failure `why` says what is
 * wrong (job validation, before anything runs).
 */
bool merge_many_check(uint32_t kernel, size_t n_args, size_t n_params, size_t n_stats, const uint32_t * ints, size_t n_ints, std::string * why);

/** task-merge flags (TASK_MERGE_FLAGS in job.ts). */
enum : uint32_t {
    TASK_MERGE_TRIM = 1,
    TASK_MERGE_DROP = 2,
    TASK_MERGE_RESCALE = 4,
    TASK_MERGE_CONSENSUS = 8,
    TASK_MERGE_BY_COUNT = 16,
    TASK_MERGE_NORMALIZE = 32,
};
