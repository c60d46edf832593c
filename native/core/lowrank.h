// Low-rank operands: an operand whose element i is a value of the product up·down of two small
// factor matrices (a LoRA's ΔW), computed block by block from the factors, never materialised.
//
// The fixed summation order (the contract both engines keep, lib/engine/lowrank.ts is the TS
// twin): for element i, row = i / cols, col = i % cols, and
//   p_r = fp32(up[row·rank + r] · down[r·cols + col])     one rounding per product
//   P   = p_0;  P = fp32(P + p_r) for r = 1 … rank−1        one rounding per add, r ascending
// With a Hadamard factor (LyCORIS LoHa), the value is fp32(P · Q), Q the second product's P.
// Factors are row-major in an input file, any float dtype, widened exactly to fp32.
#pragma once

#include <cstdint>

#include "kernels.h"

/** Most rank a low-rank product may have (job validation). */
constexpr uint32_t MERGE_LOWRANK_MAX_RANK = 65536;

struct merge_lowrank_factor {
    uint32_t file = 0;   // index into merge_job::inputs
    uint64_t offset = 0; // absolute byte offset of element 0
    uint32_t dtype = 0;  // st_dtype id (a math dtype)
};

/** up is [rows, rank], down [rank, cols]. */
struct merge_lowrank_product {
    uint32_t rank = 0; // 0: absent (only for `hadamard`)
    merge_lowrank_factor up, down;
};

/** `{kind:"lowrank", rows, cols, rank, up, down, hadamard?}` of lib/native/job.ts. */
struct merge_lowrank {
    uint64_t rows = 0, cols = 0;
    merge_lowrank_product product;
    merge_lowrank_product hadamard; // rank 0: none
};

/**
 * `{kind:"kronecker", rows, cols, kernel, rowStart, a, b}` (LyCORIS LoKr): element (row, col) of
 * the operand is module element (rowStart + row, col); with i = col / kernel, s = col % kernel,
 * d = b.cols / kernel: fp32(A[r / b.rows, i / d] · B[r % b.rows, (i % d)·kernel + s]). A factor
 * is a full matrix [rows, cols] or a low-rank product (values in the order above).
 */
struct merge_kron_factor {
    uint64_t rows = 0, cols = 0;
    merge_lowrank_factor full;     // used when product.rank == 0
    merge_lowrank_product product; // rank > 0: up [rows, rank], down [rank, cols]
};

struct merge_kronecker {
    uint64_t rows = 0, cols = 0, kernel = 1, row_start = 0;
    merge_kron_factor a, b;
};

/** A Kronecker factor resolved to mapped bytes. */
struct kron_factor_view {
    const uint8_t * full;
    const uint8_t * up;
    const uint8_t * down;
    merge_load_fn load_full, load_up, load_down;
    uint32_t full_size, up_size, down_size, rank; // rank 0: full
    uint64_t cols;
};

/** Elements [i0, i0 + m) of a Kronecker operand into out. */
void kronecker_f32(const kron_factor_view & a, const kron_factor_view & b, uint64_t b_rows, uint64_t kernel, uint64_t row_start, uint64_t cols, uint64_t i0, size_t m, float * out);

/** A product's factors resolved to mapped bytes (the engine checked the ranges). */
struct lowrank_factors {
    const uint8_t * up;
    const uint8_t * down;
    merge_load_fn load_up, load_down;
    uint32_t up_size, down_size; // bytes per element
    uint32_t rank;
    uint32_t down_dtype = 0;                 // st_dtype id: the SIMD paths read F16, BF16 and F32 `down` in place
    const merge_kernels * kernels = nullptr; // the job's kernel set (its ISA picks the product code); nullptr: scalar
};

/**
 * Elements [i0, i0 + m) of the product into out (m floats); tmp holds tmp_n ≥ 4 floats of
 * scratch. Allocates nothing; element values do not depend on i0, m, tmp_n or the ISA.
 * The kernel set's ISA picks the code (lowrank_simd.h for AVX2 / AVX-512, else the scalar loops).
 */
void lowrank_product_f32(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n);

/** The scalar product (the reference the SIMD versions match bit for bit). */
void lowrank_product_scalar_f32(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n);

/**
 * The SIMD products (lowrank_avx2.cc, lowrank_avx512.cc): false when they do not apply (down not
 * F16 / BF16 / F32, too little scratch, not compiled in), and then nothing was written.
 * Only called once cpu.cc says the CPU and the OS support the ISA.
 */
bool lowrank_product_avx2(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n);
bool lowrank_product_avx512(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n);

/** out[k] = fp32(out[k] · other[k]): the Hadamard step of LoHa. */
void lowrank_hadamard_f32(float * out, const float * other, size_t m);
