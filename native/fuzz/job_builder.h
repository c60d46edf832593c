// Turns fuzzer bytes into a merge_job, for the libFuzzer targets in this folder. Every field
// the binding would copy from JS is drawn from the bytes: counts, ids, offsets, sizes, params.
// Numbers come from a mix of small plausible values (so that valid jobs are reachable: ranges
// that fit, earlier op references), boundary values and raw 64-bit words (overflow paths).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "core/dtype.h"
#include "core/job.h"
#include "core/kernels.h"
#include "core/reductions.h"

struct fuzz_shape {
    size_t max_inputs = 4;
    size_t max_outputs = 3;
    size_t max_pieces = 4;
    size_t max_ops = 4;
    size_t max_writes = 3;
    size_t max_literals = 3;
    size_t max_crc = 3;
    uint64_t scale = 4096; // "plausible" sizes and offsets are below this
    size_t max_literal_bytes = 64;
};

class fuzz_job_builder {
public:
    fuzz_job_builder(FuzzedDataProvider & d, const fuzz_shape & shape) : d_(d), s_(shape) {}

    /** A number: small (< scale), a boundary (0, 2^32, 2^64-1 ...), near the scale, or raw. */
    uint64_t number(uint64_t scale) {
        static const uint64_t boundary[] = {0, 1, 2, 3, 4, 7, 8, 63, 64, 4095, 4096, 4097, UINT32_MAX, (uint64_t) UINT32_MAX + 1,
                                            UINT64_MAX / 8, UINT64_MAX / 4 + 1, UINT64_MAX / 2, UINT64_MAX - 7, UINT64_MAX - 1, UINT64_MAX};
        switch (d_.ConsumeIntegralInRange<int>(0, 3)) {
            case 0: return d_.ConsumeIntegralInRange<uint64_t>(0, scale);
            case 1: return boundary[d_.ConsumeIntegralInRange<size_t>(0, sizeof(boundary) / sizeof(boundary[0]) - 1)];
            case 2: {
                const uint64_t delta = d_.ConsumeIntegralInRange<uint64_t>(0, 16);
                return d_.ConsumeBool() ? scale + delta : (scale > delta ? scale - delta : 0);
            }
            default: return d_.ConsumeIntegral<uint64_t>();
        }
    }

    /** An id below `count` most of the time, sometimes just past it or anything. */
    uint32_t id(uint32_t count) {
        switch (d_.ConsumeIntegralInRange<int>(0, 7)) {
            case 0: return count + d_.ConsumeIntegralInRange<uint32_t>(0, 2);
            case 1: return d_.ConsumeIntegral<uint32_t>();
            default: return count == 0 ? 0 : d_.ConsumeIntegralInRange<uint32_t>(0, count - 1);
        }
    }

    merge_lowrank_factor factor(uint32_t n_inputs) {
        merge_lowrank_factor f;
        f.file = id(n_inputs);
        f.dtype = dtype();
        f.offset = number(s_.scale);
        return f;
    }

    /** A low-rank product whose shape mostly fits a piece of n elements. */
    merge_lowrank_product product(uint32_t n_inputs, uint64_t rows, uint64_t cols) {
        merge_lowrank_product pr;
        (void) rows;
        (void) cols;
        pr.rank = d_.ConsumeIntegralInRange<int>(0, 7) == 0 ? d_.ConsumeIntegral<uint32_t>() : d_.ConsumeIntegralInRange<uint32_t>(0, 8);
        pr.up = factor(n_inputs);
        pr.down = factor(n_inputs);
        return pr;
    }

    /** rows × cols = n most of the time (a divisor pair), sometimes anything. */
    void shape_for(uint64_t n, uint64_t * rows, uint64_t * cols) {
        if (d_.ConsumeIntegralInRange<int>(0, 7) == 0) {
            *rows = number(s_.scale / 4);
            *cols = number(s_.scale / 4);
            return;
        }
        uint64_t r = n == 0 ? 0 : d_.ConsumeIntegralInRange<uint64_t>(1, std::min<uint64_t>(n, 64));
        while (r > 1 && n % r != 0) r--;
        *rows = r;
        *cols = r == 0 ? 0 : n / r;
    }

    /** Mostly a float dtype (the merges), sometimes any id including invalid ones. */
    uint32_t dtype() {
        static const uint32_t floats[] = {ST_DTYPE_F16, ST_DTYPE_BF16, ST_DTYPE_F32, ST_DTYPE_F64};
        if (d_.ConsumeIntegralInRange<int>(0, 3) != 0) return floats[d_.ConsumeIntegralInRange<int>(0, 3)];
        return id(ST_DTYPE_COUNT);
    }

    merge_operand operand(uint32_t n_inputs, uint32_t op_index, uint64_t input_scale) {
        merge_operand a;
        const int kind = d_.ConsumeIntegralInRange<int>(0, 15);
        a.kind = kind == 15 ? (merge_operand_kind) d_.ConsumeIntegral<uint32_t>() : kind < 5 && op_index > 0 ? MERGE_OPERAND_OP : MERGE_OPERAND_INPUT;
        if (a.kind == MERGE_OPERAND_OP) {
            a.index = id(op_index);
        } else {
            a.file = id(n_inputs);
            a.dtype = dtype();
            a.offset = number(input_scale);
        }
        return a;
    }

    merge_job build(std::vector<std::string> input_paths, std::vector<std::string> output_paths) {
        merge_job job;
        const size_t n_inputs = std::min(input_paths.size(), d_.ConsumeIntegralInRange<size_t>(0, s_.max_inputs));
        for (size_t i = 0; i < n_inputs; i++) job.inputs.push_back({d_.ConsumeIntegralInRange<int>(0, 31) == 0 ? std::string() : input_paths[i], number(s_.scale)});
        const size_t n_outputs = std::min(output_paths.size(), d_.ConsumeIntegralInRange<size_t>(0, s_.max_outputs));
        for (size_t o = 0; o < n_outputs; o++) {
            merge_output out;
            out.path = d_.ConsumeIntegralInRange<int>(0, 31) == 0 ? std::string() : output_paths[o];
            out.size = number(s_.scale);
            const size_t n_lit = d_.ConsumeIntegralInRange<size_t>(0, s_.max_literals);
            for (size_t l = 0; l < n_lit; l++) {
                merge_literal lit;
                lit.offset = number(s_.scale);
                lit.data = d_.ConsumeBytes<uint8_t>(d_.ConsumeIntegralInRange<size_t>(0, s_.max_literal_bytes));
                out.literals.push_back(std::move(lit));
            }
            const size_t n_crc = d_.ConsumeIntegralInRange<size_t>(0, s_.max_crc);
            for (size_t c = 0; c < n_crc; c++) out.crc32_ranges.push_back({number(s_.scale), number(s_.scale)});
            job.outputs.push_back(std::move(out));
        }
        const size_t n_pieces = d_.ConsumeIntegralInRange<size_t>(0, s_.max_pieces);
        for (size_t p = 0; p < n_pieces; p++) {
            merge_piece piece;
            piece.name = "t" + std::to_string(p);
            piece.n = number(s_.scale / 4);
            // LoRA operands (low-rank products, Kronecker factors), referenced by some op arguments.
            if (d_.ConsumeIntegralInRange<int>(0, 3) == 0) {
                const size_t n_lr = d_.ConsumeIntegralInRange<size_t>(0, 2);
                for (size_t l = 0; l < n_lr; l++) {
                    merge_lowrank lr;
                    shape_for(piece.n, &lr.rows, &lr.cols);
                    lr.product = product((uint32_t) n_inputs, lr.rows, lr.cols);
                    if (d_.ConsumeBool()) lr.hadamard = product((uint32_t) n_inputs, lr.rows, lr.cols);
                    piece.lowranks.push_back(lr);
                }
                const size_t n_kr = d_.ConsumeIntegralInRange<size_t>(0, 1);
                for (size_t l = 0; l < n_kr; l++) {
                    merge_kronecker kr;
                    shape_for(piece.n, &kr.rows, &kr.cols);
                    kr.kernel = d_.ConsumeIntegralInRange<int>(0, 3) == 0 ? number(9) : 1;
                    kr.row_start = d_.ConsumeIntegralInRange<int>(0, 3) == 0 ? number(s_.scale / 4) : 0;
                    for (merge_kron_factor * f : {&kr.a, &kr.b}) {
                        f->rows = d_.ConsumeIntegralInRange<uint64_t>(0, 16);
                        f->cols = d_.ConsumeIntegralInRange<uint64_t>(0, 16);
                        if (d_.ConsumeBool()) f->product = product((uint32_t) n_inputs, f->rows, f->cols);
                        else f->full = factor((uint32_t) n_inputs);
                    }
                    piece.kroneckers.push_back(kr);
                }
            }
            const size_t n_ops = d_.ConsumeIntegralInRange<size_t>(0, s_.max_ops);
            for (size_t k = 0; k < n_ops; k++) {
                merge_op op;
                op.kernel = id(MERGE_KERNEL_COUNT);
                // Variable-arity kernels (the many-model ones) get any count up to one past the limits.
                size_t n_args = merge_kernel_arity(op.kernel);
                if (n_args == MERGE_VARIABLE) n_args = d_.ConsumeIntegralInRange<size_t>(0, MERGE_MAX_ARGS + 1);
                if (d_.ConsumeIntegralInRange<int>(0, 15) == 0) n_args = d_.ConsumeIntegralInRange<size_t>(0, 4);
                for (size_t a = 0; a < n_args; a++) op.args.push_back(operand((uint32_t) n_inputs, (uint32_t) k, s_.scale));
                if (!op.args.empty() && (!piece.lowranks.empty() || !piece.kroneckers.empty()) && d_.ConsumeBool()) {
                    merge_operand & a = op.args[d_.ConsumeIntegralInRange<size_t>(0, op.args.size() - 1)];
                    const bool kron = piece.lowranks.empty() || (!piece.kroneckers.empty() && d_.ConsumeBool());
                    a = merge_operand{};
                    a.kind = kron ? MERGE_OPERAND_KRONECKER : MERGE_OPERAND_LOWRANK;
                    a.index = id((uint32_t) (kron ? piece.kroneckers.size() : piece.lowranks.size()));
                }
                size_t n_params = merge_kernel_n_params(op.kernel);
                if (n_params == MERGE_VARIABLE) n_params = d_.ConsumeIntegralInRange<size_t>(0, 2 * n_args + 2);
                if (d_.ConsumeIntegralInRange<int>(0, 15) == 0) n_params = d_.ConsumeIntegralInRange<size_t>(0, 6);
                for (size_t q = 0; q < n_params; q++) op.params.push_back(d_.ConsumeFloatingPoint<float>());
                if (op.kernel >= MERGE_KERNEL_TASK_MERGE || d_.ConsumeIntegralInRange<int>(0, 31) == 0) {
                    const size_t n_stats = d_.ConsumeIntegralInRange<size_t>(0, 2 * n_args + 1);
                    for (size_t q = 0; q < n_stats; q++) op.stats.push_back(d_.ConsumeIntegralInRange<uint32_t>(0, 8));
                    const size_t n_ints = d_.ConsumeIntegralInRange<size_t>(0, n_args + 4);
                    for (size_t q = 0; q < n_ints; q++) op.ints.push_back(d_.ConsumeBool() ? d_.ConsumeIntegralInRange<uint32_t>(0, 7) : d_.ConsumeIntegral<uint32_t>());
                    op.element_start = d_.ConsumeIntegralInRange<int>(0, 7) == 0 ? d_.ConsumeIntegral<uint64_t>() : number(s_.scale / 4);
                }
                op.round = d_.ConsumeIntegralInRange<int>(0, 7) == 0 ? id(ST_DTYPE_COUNT) : dtype();
                piece.ops.push_back(std::move(op));
            }
            // Per-piece statistics over inputs or ops (any kind id, operand count and k).
            const size_t n_reductions = d_.ConsumeIntegralInRange<int>(0, 3) == 0 ? d_.ConsumeIntegralInRange<size_t>(0, 4) : 0;
            for (size_t r = 0; r < n_reductions; r++) {
                merge_reduction red;
                red.kind = id(MERGE_REDUCTION_COUNT);
                const size_t n_red_args = d_.ConsumeIntegralInRange<int>(0, 15) == 0 ? d_.ConsumeIntegralInRange<size_t>(0, 3) : merge_reduction_arity(red.kind);
                for (size_t a = 0; a < n_red_args; a++) red.args.push_back(operand((uint32_t) n_inputs, (uint32_t) piece.ops.size(), s_.scale));
                red.k = d_.ConsumeBool() ? d_.ConsumeIntegralInRange<uint64_t>(0, piece.n + 1) : number(s_.scale);
                red.columns = d_.ConsumeIntegralInRange<int>(0, 3) == 0 ? d_.ConsumeIntegralInRange<uint64_t>(0, 70) : 0; // per-column sums
                piece.reductions.push_back(std::move(red));
            }
            const size_t n_writes = d_.ConsumeIntegralInRange<size_t>(0, s_.max_writes);
            for (size_t w = 0; w < n_writes; w++) {
                merge_write wr;
                wr.output = id((uint32_t) n_outputs);
                wr.offset = number(s_.scale);
                wr.dtype = dtype();
                wr.source = operand((uint32_t) n_inputs, (uint32_t) piece.ops.size(), s_.scale);
                if (wr.source.kind == MERGE_OPERAND_INPUT && d_.ConsumeBool()) wr.source.dtype = wr.dtype; // raw copies
                piece.writes.push_back(wr);
            }
            job.pieces.push_back(std::move(piece));
        }
        job.threads = d_.ConsumeIntegralInRange<int>(0, 15) == 0 ? d_.ConsumeIntegral<uint32_t>() : d_.ConsumeIntegralInRange<uint32_t>(1, 3);
        job.isa = d_.ConsumeIntegralInRange<int>(0, 15) == 0 ? (merge_isa) d_.ConsumeIntegral<uint32_t>() : (merge_isa) d_.ConsumeIntegralInRange<uint32_t>(0, 3);
        return job;
    }

private:
    FuzzedDataProvider & d_;
    fuzz_shape s_;
};
