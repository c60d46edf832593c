// fp8 pair tables (issue 10): a write whose value is one two-input kernel with constant
// parameters (weighted sum, lerp) of two fp8 inputs has an output element that depends only on
// the two input codes. Its 65,536 possible results, computed once by this ISA's own widening,
// kernel, rounding and store (the path every element took before, so the same bits by
// construction), replace that path by one table lookup per element. The TS engine does the
// same for fp8 -> fp8 (lib/engine/js-chunks.ts pairOp).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "job.h"
#include "kernels.h"

/**
 * Default for TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: writes sharing one table (same kernel,
 * parameters and dtypes) must cover at least this many elements together, else the generic path
 * runs. Building a table (60-160 us at AVX-512, 0.4-0.5 ms at AVX2, 0.7-2 ms scalar, loaded
 * machine) saves itself after about 300K elements at AVX-512 (0.2 ns each from memory, none in
 * cache), far fewer at AVX2 and scalar (bench/RESULTS.md, "fp8 pair tables in the native
 * engine"); the TS engine's threshold is the same.
 */
constexpr uint64_t PAIR_TABLE_MIN_ELEMENTS = 1u << 18;

/**
 * Private memory all of a job's tables may take (the largest groups get them): 127 fp8 tables,
 * 31 fp32 ones; a recipe with a multiplier per tensor would otherwise hold a table per tensor.
 */
constexpr uint64_t PAIR_TABLE_MAX_BYTES = 8u << 20;

/** Bytes after a table's 65,536 entries: a SIMD gather reads 4 bytes at each entry. */
constexpr size_t PAIR_TABLE_PAD = 4;

/** The tables of one job and, per piece and write, the one it reads (nullptr: the generic path). */
struct merge_pair_tables {
    std::vector<std::unique_ptr<uint8_t[]>> tables;
    std::vector<std::vector<const uint8_t *>> of_write; // [piece][write]

    const uint8_t * find(size_t p, size_t w) const { return p < of_write.size() && w < of_write[p].size() ? of_write[p][w] : nullptr; }
};

/**
 * Whether write w of piece p can be a table lookup: its source is an op of kernel weighted-sum
 * or lerp whose two arguments are fp8 inputs, and the write stores F8_*, F16, BF16 or F32.
 */
bool merge_pair_table_applies(const merge_piece & piece, const merge_write & write);

/**
 * Builds the tables (with kernels `k`) of the job's applicable writes whose groups cover at least
 * min_elements elements, largest groups first, within PAIR_TABLE_MAX_BYTES. Throws std::bad_alloc only.
 */
void merge_pair_tables_build(const merge_job & job, const merge_kernels * k, uint64_t min_elements, merge_pair_tables * out);

/**
 * One table's results for input codes a and b: entry (a << 8) | b of `table`, out_size bytes each
 * (the write's dtype), computed with kernels k. Exposed for the tests. `table` holds 65,536 * out_size + PAIR_TABLE_PAD bytes.
 */
void merge_pair_table_fill(const merge_kernels * k, const merge_op & op, uint32_t out_dtype, uint8_t * table);
