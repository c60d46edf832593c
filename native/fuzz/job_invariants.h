// What "merge_job_validate accepted it" must mean, re-derived independently of job.cc with
// 128-bit arithmetic, and what a plan built from an accepted job must look like. A broken
// invariant is a finding: FUZZ_CHECK prints it and aborts, so libFuzzer saves the input.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/dtype.h"
#include "core/job.h"
#include "core/kernels.h"
#include "core/many_kernels.h"
#include "core/reductions.h"
#include "core/plan.h"

#define FUZZ_CHECK(cond, ...)                                                        \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: invariant broken: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                       \
            std::fprintf(stderr, "\n");                                              \
            std::abort();                                                            \
        }                                                                            \
    } while (0)

using u128 = unsigned __int128;

inline bool fuzz_is_float(uint32_t dt) { return dt == ST_DTYPE_F16 || dt == ST_DTYPE_BF16 || dt == ST_DTYPE_F32 || dt == ST_DTYPE_F64 || dt == ST_DTYPE_F8_E4M3 || dt == ST_DTYPE_F8_E5M2; } // st_dtype_is_math

struct fuzz_span {
    u128 begin, end;
};

/** Every range an accepted job touches is inside its file, every reference resolves. */
inline void fuzz_check_accepted(const merge_job & job) {
    FUZZ_CHECK(job.threads >= 1 && job.threads <= 1024, "threads %u", job.threads);
    FUZZ_CHECK(job.isa <= MERGE_ISA_AVX512, "isa %u", (unsigned) job.isa);
    for (const merge_input & in : job.inputs) FUZZ_CHECK(!in.path.empty(), "empty input path");
    std::vector<std::vector<fuzz_span>> spans(job.outputs.size());
    for (size_t o = 0; o < job.outputs.size(); o++) {
        const merge_output & out = job.outputs[o];
        FUZZ_CHECK(!out.path.empty(), "empty output path");
        for (const merge_literal & lit : out.literals) {
            const u128 end = (u128) lit.offset + lit.data.size();
            FUZZ_CHECK(end <= out.size, "literal past the output end");
            if (!lit.data.empty()) spans[o].push_back({lit.offset, end});
        }
        for (const merge_range & r : out.crc32_ranges) FUZZ_CHECK((u128) r.offset + r.length <= out.size, "crc32 range past the output end");
    }
    auto check_input = [&](const merge_piece & p, const merge_operand & a) {
        FUZZ_CHECK(a.kind == MERGE_OPERAND_INPUT, "operand kind %u", (unsigned) a.kind);
        FUZZ_CHECK(a.file < job.inputs.size(), "input %u of %zu", a.file, job.inputs.size());
        FUZZ_CHECK(st_dtype_valid(a.dtype), "dtype %u", a.dtype);
        const u128 end = (u128) a.offset + (u128) p.n * st_dtype_size(a.dtype);
        FUZZ_CHECK(end <= job.inputs[a.file].size, "input range past the end of input %u (piece %s)", a.file, p.name.c_str());
    };
    // A LoRA factor's bytes lie inside its input (elements × the dtype's size).
    auto check_factor = [&](const merge_lowrank_factor & f, u128 elements) {
        FUZZ_CHECK(f.file < job.inputs.size(), "factor input %u of %zu", f.file, job.inputs.size());
        FUZZ_CHECK(fuzz_is_float(f.dtype), "factor dtype %u", f.dtype);
        FUZZ_CHECK((u128) f.offset + elements * st_dtype_size(f.dtype) <= job.inputs[f.file].size, "factor past the end of input %u", f.file);
    };
    auto check_product = [&](const merge_lowrank_product & pr, uint64_t rows, uint64_t cols, bool) {
        FUZZ_CHECK(pr.rank >= 1 && pr.rank <= 65536, "rank %u", pr.rank);
        check_factor(pr.up, (u128) rows * pr.rank);
        check_factor(pr.down, (u128) pr.rank * cols);
    };
    for (const merge_piece & p : job.pieces) {
        for (size_t k = 0; k < p.ops.size(); k++) {
            const merge_op & op = p.ops[k];
            FUZZ_CHECK(op.kernel < MERGE_KERNEL_COUNT, "kernel %u", op.kernel);
            if (op.kernel >= MERGE_KERNEL_TASK_MERGE) {
                std::string why;
                FUZZ_CHECK(merge_many_check(op.kernel, op.args.size(), op.params.size(), op.stats.size(), op.ints.data(), op.ints.size(), &why), "many-kernel layout: %s", why.c_str());
            } else {
                FUZZ_CHECK(op.args.size() == merge_kernel_arity(op.kernel), "arity");
                FUZZ_CHECK(op.params.size() == merge_kernel_n_params(op.kernel), "params");
                FUZZ_CHECK(op.stats.empty() && op.ints.empty(), "stats or ints on a classic kernel");
            }
            for (uint32_t r : op.stats) FUZZ_CHECK(r < p.reductions.size(), "stat %u of %zu", r, p.reductions.size());
            FUZZ_CHECK((u128) op.element_start + p.n <= (u128) UINT64_MAX, "elementStart overflows");
            for (float v : op.params) FUZZ_CHECK(std::isfinite(v), "a non-finite parameter was accepted");
            FUZZ_CHECK(fuzz_is_float(op.round), "round through dtype %u", op.round);
            for (const merge_operand & a : op.args) {
                if (a.kind == MERGE_OPERAND_OP) {
                    FUZZ_CHECK(a.index < k, "op %zu refers to op %u", k, a.index);
                } else if (a.kind == MERGE_OPERAND_LOWRANK) {
                    FUZZ_CHECK(a.index < p.lowranks.size(), "lowrank %u of %zu", a.index, p.lowranks.size());
                    const merge_lowrank & lr = p.lowranks[a.index];
                    FUZZ_CHECK((u128) lr.rows * lr.cols == p.n, "lowrank %llu x %llu for %llu elements", (unsigned long long) lr.rows, (unsigned long long) lr.cols, (unsigned long long) p.n);
                    check_product(lr.product, lr.rows, lr.cols, true);
                    if (lr.hadamard.rank != 0) check_product(lr.hadamard, lr.rows, lr.cols, true);
                } else if (a.kind == MERGE_OPERAND_KRONECKER) {
                    FUZZ_CHECK(a.index < p.kroneckers.size(), "kronecker %u of %zu", a.index, p.kroneckers.size());
                    const merge_kronecker & kr = p.kroneckers[a.index];
                    FUZZ_CHECK((u128) kr.rows * kr.cols == p.n, "kronecker %llu x %llu for %llu elements", (unsigned long long) kr.rows, (unsigned long long) kr.cols, (unsigned long long) p.n);
                    for (const merge_kron_factor * f : {&kr.a, &kr.b}) {
                        if (f->product.rank != 0) check_product(f->product, f->rows, f->cols, true);
                        else check_factor(f->full, (u128) f->rows * f->cols);
                    }
                    // Every module row the operand reads exists: rows come from a.rows × b.rows.
                    FUZZ_CHECK((u128) kr.row_start + kr.rows <= (u128) kr.a.rows * kr.b.rows, "kronecker rows past the module");
                } else {
                    check_input(p, a);
                    FUZZ_CHECK(fuzz_is_float(a.dtype), "math on dtype %u", a.dtype);
                }
            }
        }
        // Reductions: known kinds and arities, operands that resolve, k within the piece, and no
        // op a reduction reads (directly or through other ops) reads reduction results.
        FUZZ_CHECK(p.reductions.size() <= MERGE_MAX_REDUCTIONS, "reductions %zu", p.reductions.size());
        std::vector<bool> feeds(p.ops.size(), false);
        for (const merge_reduction & red : p.reductions) {
            FUZZ_CHECK(red.kind < MERGE_REDUCTION_COUNT, "reduction kind %u", red.kind);
            FUZZ_CHECK(red.args.size() == (red.kind == MERGE_REDUCTION_DOT ? 2u : 1u), "reduction arity %zu", red.args.size());
            if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE) FUZZ_CHECK(red.k <= p.n && red.columns == 0, "kth k %llu of %llu", (unsigned long long) red.k, (unsigned long long) p.n);
            if (red.columns > 0) FUZZ_CHECK(p.n % red.columns == 0, "columns");
            for (const merge_operand & a : red.args) {
                if (a.kind == MERGE_OPERAND_OP) {
                    FUZZ_CHECK(a.index < p.ops.size(), "reduction reads op %u of %zu", a.index, p.ops.size());
                    feeds[a.index] = true;
                } else {
                    check_input(p, a);
                    FUZZ_CHECK(fuzz_is_float(a.dtype), "reduction over dtype %u", a.dtype);
                }
            }
        }
        for (size_t k = p.ops.size(); k-- > 0;) {
            if (!feeds[k]) continue;
            FUZZ_CHECK(p.ops[k].stats.empty(), "op %zu feeds a reduction and reads reductions", k);
            for (const merge_operand & a : p.ops[k].args)
                if (a.kind == MERGE_OPERAND_OP) feeds[a.index] = true;
        }
        for (const merge_write & w : p.writes) {
            FUZZ_CHECK(w.output < job.outputs.size(), "write to output %u", w.output);
            FUZZ_CHECK(st_dtype_valid(w.dtype), "write dtype %u", w.dtype);
            if (w.source.kind == MERGE_OPERAND_OP) {
                FUZZ_CHECK(w.source.index < p.ops.size(), "source op %u of %zu", w.source.index, p.ops.size());
                FUZZ_CHECK(fuzz_is_float(w.dtype), "computed value stored as dtype %u", w.dtype);
            } else {
                check_input(p, w.source);
                FUZZ_CHECK(w.source.dtype == w.dtype || (fuzz_is_float(w.dtype) && fuzz_is_float(w.source.dtype)), "conversion %u -> %u", w.source.dtype, w.dtype);
            }
            const u128 end = (u128) w.offset + (u128) p.n * st_dtype_size(w.dtype);
            FUZZ_CHECK(end <= job.outputs[w.output].size, "write past the output end (piece %s)", p.name.c_str());
            if (end > w.offset) spans[w.output].push_back({w.offset, end});
        }
    }
    for (std::vector<fuzz_span> & v : spans) {
        std::sort(v.begin(), v.end(), [](const fuzz_span & a, const fuzz_span & b) { return a.begin < b.begin; });
        for (size_t i = 1; i < v.size(); i++) FUZZ_CHECK(v[i].begin >= v[i - 1].end, "accepted overlapping byte ranges");
    }
}

/** The plan of an accepted job: sorted, disjoint spans inside each output; reads inside inputs. */
inline void fuzz_check_plan(const merge_job & job, const merge_plan & plan) {
    FUZZ_CHECK(plan.spans.size() == job.outputs.size(), "spans per output");
    FUZZ_CHECK(plan.writes.size() == job.pieces.size(), "writes per piece");
    for (size_t o = 0; o < plan.spans.size(); o++) {
        const std::vector<plan_span> & v = plan.spans[o];
        for (size_t i = 0; i < v.size(); i++) {
            FUZZ_CHECK(v[i].begin < v[i].end && v[i].end <= job.outputs[o].size, "span outside output %zu", o);
            if (i > 0) FUZZ_CHECK(v[i].begin >= v[i - 1].end, "plan spans overlap in output %zu", o);
            if (v[i].piece == plan_literal) {
                FUZZ_CHECK(v[i].index < job.outputs[o].literals.size(), "literal index");
            } else {
                FUZZ_CHECK(v[i].piece < job.pieces.size() && v[i].index < job.pieces[v[i].piece].writes.size(), "write index");
            }
        }
    }
    size_t max_ops = 0;
    for (size_t p = 0; p < job.pieces.size(); p++) {
        const merge_piece & piece = job.pieces[p];
        max_ops = std::max(max_ops, piece.ops.size());
        FUZZ_CHECK(plan.writes[p].size() == piece.writes.size(), "plan writes of piece %zu", p);
        for (size_t w = 0; w < piece.writes.size(); w++) {
            const plan_write & pw = plan.writes[p][w];
            FUZZ_CHECK(pw.out_size == st_dtype_size(piece.writes[w].dtype), "out_size");
            for (size_t i = 1; i < pw.ops.size(); i++) FUZZ_CHECK(pw.ops[i - 1] < pw.ops[i], "ops not ascending");
            for (uint32_t k : pw.ops) FUZZ_CHECK(k < piece.ops.size(), "op index %u", k);
            for (const plan_input_ref & r : pw.inputs) {
                FUZZ_CHECK(r.file < job.inputs.size(), "plan input %u", r.file);
                FUZZ_CHECK((u128) r.offset + (u128) piece.n * r.elem_size <= job.inputs[r.file].size, "plan reads past input %u", r.file);
            }
        }
    }
    FUZZ_CHECK(plan.max_ops == max_ops, "max_ops %zu, want %zu", plan.max_ops, max_ops);
}
