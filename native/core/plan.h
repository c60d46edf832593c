// What the engine derives from a validated job before running it: per output, the sorted
// byte spans (writes and literals) that windows are cut from; per write, the ops it needs and
// the input ranges it reads (for prefetch and for releasing pages once consumed).
// Built once, read-only afterwards (shared by all pool threads).
#pragma once

#include <cstdint>
#include <vector>

#include "job.h"

constexpr size_t plan_literal = SIZE_MAX;

/** A non-empty byte range [begin, end) of one output, produced by one write or one literal. */
struct plan_span {
    uint64_t begin, end;
    size_t piece;  // plan_literal for a literal
    size_t index;  // write index in the piece, or literal index in the output
};

/** An input byte stream a write reads: element i is at offset + i*elem_size of file. */
struct plan_input_ref {
    uint32_t file;
    uint64_t offset;
    uint32_t elem_size;
};

struct plan_write {
    std::vector<uint32_t> ops;          // ops to evaluate, ascending (only those the source needs)
    std::vector<plan_input_ref> inputs; // distinct input streams read by those ops and the source
    uint32_t out_size = 0;              // element size in the output
    bool raw = false;                   // byte copy from the input (same dtype)
};

struct merge_plan {
    std::vector<std::vector<plan_span>> spans; // per output, sorted by begin, non-overlapping
    std::vector<std::vector<plan_write>> writes; // [piece][write]
    size_t max_ops = 0;                          // largest op count of a piece
};

/** Builds the plan of a job that passed merge_job_validate(). Throws std::bad_alloc only. */
void merge_plan_build(const merge_job & job, merge_plan * plan);

/** Elements of a write span whose first byte lies in [lo, hi): [*i0, *i1), possibly empty. */
inline void plan_elements_starting_in(uint64_t offset, uint64_t elem_size, uint64_t n, uint64_t lo, uint64_t hi, uint64_t * i0, uint64_t * i1) {
    auto first_at_or_after = [&](uint64_t pos) -> uint64_t {
        if (pos <= offset) return 0;
        const uint64_t i = (pos - offset + elem_size - 1) / elem_size;
        return i < n ? i : n;
    };
    *i0 = first_at_or_after(lo);
    *i1 = first_at_or_after(hi);
    if (*i1 < *i0) *i1 = *i0;
}
