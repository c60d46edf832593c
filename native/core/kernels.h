// Element kernels: one table of function pointers per ISA, filled at load time.
//
// Every table computes bit-identical results: the math is IEEE fp32 with one rounding per
// operation and never fused (the build uses -ffp-contract=off and no -mfma), in this order:
//   weighted-sum:   r = a*p0 + b*p1        (two products, then one add)
//   add-difference: t = b - c; t = t*p0; r = a + t
//   lerp:           t = b - a; t = t*p0; r = a + t
// Conversions follow convert.h (the SIMD f16 loads re-signal sNaNs that vcvtph2ps quiets;
// fp8 follows PyTorch's rules, see convert.h).
//
// Pointers: fp32 buffers (`float *`) are scratch owned by the caller, any alignment; `void *`
// element buffers may be at any byte address (unaligned offsets in files are legal).
// All functions are thread-safe (no state) and accept n == 0.
#pragma once

#include <cstddef>
#include <cstdint>

enum merge_kernel : uint32_t {
    MERGE_KERNEL_COPY = 0,
    MERGE_KERNEL_WEIGHTED_SUM = 1,
    MERGE_KERNEL_ADD_DIFFERENCE = 2,
    MERGE_KERNEL_LERP = 3,
    // Element-wise method kernels (method_kernels.cc, SIMD in method_kernels_simd.h):
    MERGE_KERNEL_TRAIN_DIFFERENCE = 4,
    MERGE_KERNEL_TRIPLE_SUM = 5,
    MERGE_KERNEL_SUM_TWICE = 6,
    MERGE_KERNEL_MULTIPLY_DIFFERENCE = 7,
    MERGE_KERNEL_SIMILARITY_ADD_DIFFERENCE = 8,
    MERGE_KERNEL_CLAMP = 9,
    // Many-model and statistics kernels (many_kernels.cc, scalar whatever the ISA):
    MERGE_KERNEL_TASK_MERGE = 10,
    MERGE_KERNEL_SLERP = 11,
    MERGE_KERNEL_MODEL_STOCK = 12,
    MERGE_KERNEL_ADD_COSINE = 13,
    MERGE_KERNEL_COUNT = 14,
};

/** Most operands an op may take (job validation; exec's operand slots): a base and 15 models. */
constexpr uint32_t MERGE_MAX_ARGS = 16;
/** Most parameters an op may carry. */
constexpr uint32_t MERGE_MAX_PARAMS = 32;
/** Most reduction results (JobOp.stats) and integer parameters (JobOp.ints) an op may read. */
constexpr uint32_t MERGE_MAX_STATS = 128;
constexpr uint32_t MERGE_MAX_INTS = 16;
/** Most reductions a piece may have. */
constexpr uint32_t MERGE_MAX_REDUCTIONS = 160;
/** Arity or parameter count that depends on the operands (many_kernel_check decides). */
constexpr uint32_t MERGE_VARIABLE = 0xffffffffu;

/** Operand count of a kernel (KERNEL_ARITY in job.ts); 0 for an invalid id, MERGE_VARIABLE. */
inline uint32_t merge_kernel_arity(uint32_t kernel) {
    static const uint32_t arity[MERGE_KERNEL_COUNT] = {1, 2, 3, 2, 3, 3, 3, 3, 3, 3, MERGE_VARIABLE, 2, MERGE_VARIABLE, 2};
    return kernel < MERGE_KERNEL_COUNT ? arity[kernel] : 0;
}

/** Parameters a kernel reads (p0, p1...); KERNEL_PARAMS in job.ts. */
inline uint32_t merge_kernel_n_params(uint32_t kernel) {
    static const uint32_t n[MERGE_KERNEL_COUNT] = {0, 2, 1, 1, 1, 3, 4, 4, 4, 0, MERGE_VARIABLE, 1, 0, 1};
    return kernel < MERGE_KERNEL_COUNT ? n[kernel] : 0;
}

/** The name used in TypeScript (KERNELS in job.ts). */
inline const char * merge_kernel_name(uint32_t kernel) {
    static const char * names[MERGE_KERNEL_COUNT] = {"copy", "weighted-sum", "add-difference", "lerp", "train-difference", "triple-sum", "sum-twice",
                                                     "multiply-difference", "similarity-add-difference", "clamp", "task-merge", "slerp", "model-stock", "add-cosine"};
    return kernel < MERGE_KERNEL_COUNT ? names[kernel] : "?";
}

typedef void (*merge_load_fn)(float * dst, const void * src, size_t n);
/**
 * A method kernel (ids >= MERGE_KERNEL_TRAIN_DIFFERENCE): r[i] = f(x[0][i], x[1][i], ..., p);
 * `x` holds merge_kernel_arity(kernel) operand pointers, `p` merge_kernel_n_params(kernel)
 * parameters (checked by merge_job_validate).
 */
typedef void (*merge_method_fn)(float * r, const float * const * x, const float * p, size_t n);
typedef void (*merge_store_fn)(void * dst, const float * src, size_t n);
typedef void (*merge_round_fn)(float * x, size_t n);
struct merge_many_args;
/**
 * The task merge without DROP (many_kernels.h MERGE_KERNEL_TASK_MERGE) with every operand an input
 * of one 16-bit float dtype (F16 or BF16) and the result stored as F16 or BF16: src[j] points at
 * operand j's first element (a.x is not read), dst at the output's. The bytes of widening the
 * operands into slots, the fp32 kernel, then the store (task_merge_lanes.h): the output pass of
 * TIES on fp16 or bf16 models without its slots. merge_task_merge_half_for picks one.
 */
typedef void (*merge_task_merge_half_fn)(void * dst, const uint8_t * const * src, const merge_many_args & a, size_t n);
/**
 * fp8 pair-table lookup (pair_table.h): element i of dst (out_size 1, 2 or 4 bytes) is entry
 * (a[i] << 8) | b[i] of `table`, which holds 65,536 entries and PAIR_TABLE_PAD more bytes.
 */
typedef void (*merge_pair_lookup_fn)(void * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table, uint32_t out_size, size_t n);

struct merge_kernels {
    const char * isa; // "scalar", "avx2", "avx512"

    // fp8 (F8_E4M3 is e4m3fn): load widens, store narrows, round narrows then widens in place
    merge_load_fn load_f8_e4m3, load_f8_e5m2;
    merge_store_fn store_f8_e4m3, store_f8_e5m2;
    merge_round_fn round_f8_e4m3, round_f8_e5m2;

    // element i of src (dtype) -> dst[i] as fp32
    merge_load_fn load_f16, load_bf16, load_f32, load_f64;
    // src[i] -> element i of dst (dtype)
    merge_store_fn store_f16, store_bf16, store_f32, store_f64;
    // x[i] = widen(narrow(x[i])), in place
    merge_round_fn round_f16, round_bf16;

    void (*weighted_sum)(float * r, const float * a, const float * b, float p0, float p1, size_t n);
    void (*add_difference)(float * r, const float * a, const float * b, const float * c, float p0, size_t n);
    void (*lerp)(float * r, const float * a, const float * b, float p0, size_t n);

    merge_pair_lookup_fn pair_lookup; // scalar: byte loads; AVX2 / AVX-512: 32-bit gathers

    // This ISA's method kernel for an id, nullptr where it has none (merge_method_kernel_for
    // then falls back to the scalar one).
    merge_method_fn (*method)(uint32_t kernel);

    // The fused task merge from operands of dtype `in` to an output of dtype `out`, nullptr for
    // other dtypes; the field is nullptr for the scalar ISA (the slots' path then runs: its
    // widening is per element anyway). Callers use merge_task_merge_half_for.
    merge_task_merge_half_fn (*task_merge_half)(uint32_t in, uint32_t out);
};

/** The scalar reference, always available. */
const merge_kernels * merge_kernels_scalar();
/** AVX2 + F16C, or nullptr when not compiled in (non-x86 builds). Check the CPU first. */
const merge_kernels * merge_kernels_avx2();
/** AVX-512 F/BW/VL + F16C, or nullptr when not compiled in. Check the CPU first. */
const merge_kernels * merge_kernels_avx512();

/** The load/store for a math dtype id (F16, BF16, F32, F64, F8_E4M3, F8_E5M2), nullptr otherwise. */
merge_load_fn merge_kernels_load(const merge_kernels * k, uint32_t dtype);
merge_store_fn merge_kernels_store(const merge_kernels * k, uint32_t dtype);
/** The ISA's fused task merge from `in` operands to an `out` output (F16 / BF16 each), or nullptr. */
merge_task_merge_half_fn merge_task_merge_half_for(const merge_kernels * k, uint32_t in, uint32_t out);
/** The in-place rounding through a narrow dtype (F16, BF16, F8_*); nullptr for F32 and F64. */
merge_round_fn merge_kernels_round(const merge_kernels * k, uint32_t dtype);
