#include "job.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "dtype.h"
#include "kernels.h"
#include "many_kernels.h"
#include "reductions.h"

namespace {

constexpr size_t max_threads = 1024;
constexpr size_t max_params = MERGE_MAX_PARAMS;

bool add_overflows(uint64_t a, uint64_t b, uint64_t * out) { return __builtin_add_overflow(a, b, out); }
bool mul_overflows(uint64_t a, uint64_t b, uint64_t * out) { return __builtin_mul_overflow(a, b, out); }

/** [offset, offset + n*size) inside [0, limit)? Checked arithmetic; false on overflow. */
bool range_inside(uint64_t offset, uint64_t n, uint64_t size, uint64_t limit, uint64_t * end) {
    uint64_t bytes;
    if (mul_overflows(n, size, &bytes)) return false;
    if (add_overflows(offset, bytes, end)) return false;
    return *end <= limit;
}

struct span {
    uint64_t begin, end;
    size_t piece; // SIZE_MAX for a literal
};

class validator {
public:
    explicit validator(const merge_job & job) : job_(job) {}

    merge_status run() {
        if (job_.threads < 1 || job_.threads > max_threads)
            return fail(merge_error::INVALID_ARGUMENT, "threads must be between 1 and " + std::to_string(max_threads));
        if (job_.isa > MERGE_ISA_AVX512) return fail(merge_error::INVALID_ARGUMENT, "unknown isa");
        for (size_t i = 0; i < job_.inputs.size(); i++)
            if (job_.inputs[i].path.empty()) return fail(merge_error::INVALID_ARGUMENT, "input " + std::to_string(i) + " has an empty path");
        spans_.resize(job_.outputs.size());
        for (size_t o = 0; o < job_.outputs.size(); o++) {
            merge_status s = check_output(o);
            if (!s.ok()) return s;
        }
        for (size_t p = 0; p < job_.pieces.size(); p++) {
            merge_status s = check_piece(p);
            if (!s.ok()) return s;
        }
        for (size_t o = 0; o < job_.outputs.size(); o++) {
            merge_status s = check_overlaps(o);
            if (!s.ok()) return s;
        }
        return {};
    }

private:
    const merge_job & job_;
    std::vector<std::vector<span>> spans_;

    static merge_status fail(merge_error code, std::string msg, std::string path = {}, std::string tensor = {}) {
        return merge_status::fail(code, std::move(msg), std::move(path), std::move(tensor));
    }

    merge_status check_output(size_t o) {
        const merge_output & out = job_.outputs[o];
        if (out.path.empty()) return fail(merge_error::INVALID_ARGUMENT, "output " + std::to_string(o) + " has an empty path");
        for (const merge_literal & lit : out.literals) {
            uint64_t end;
            if (!range_inside(lit.offset, lit.data.size(), 1, out.size, &end))
                return fail(merge_error::INVALID_OFFSET, "literal at offset " + std::to_string(lit.offset) + " (" +
                        std::to_string(lit.data.size()) + " bytes) is outside the output (" + std::to_string(out.size) + " bytes)", out.path);
            spans_[o].push_back({lit.offset, end, SIZE_MAX});
        }
        for (const merge_range & r : out.crc32_ranges) {
            uint64_t end;
            if (!range_inside(r.offset, r.length, 1, out.size, &end))
                return fail(merge_error::INVALID_OFFSET, "crc32 range at offset " + std::to_string(r.offset) + " is outside the output", out.path);
        }
        return {};
    }

    merge_status check_input_operand(const merge_piece & piece, const merge_operand & a, bool math) {
        if (a.file >= job_.inputs.size())
            return fail(merge_error::INVALID_ARGUMENT, "operand refers to input " + std::to_string(a.file) + " of " + std::to_string(job_.inputs.size()), {}, piece.name);
        const merge_input & in = job_.inputs[a.file];
        if (!st_dtype_valid(a.dtype)) return fail(merge_error::DTYPE_UNSUPPORTED, "invalid dtype id " + std::to_string(a.dtype), in.path, piece.name);
        if (math && !st_dtype_is_math(a.dtype))
            return fail(merge_error::DTYPE_UNSUPPORTED, std::string("cannot compute with dtype ") + st_dtype_name(a.dtype), in.path, piece.name);
        uint64_t end;
        if (!range_inside(a.offset, piece.n, st_dtype_size(a.dtype), in.size, &end))
            return fail(merge_error::INVALID_OFFSET, "input range at offset " + std::to_string(a.offset) + " (" + std::to_string(piece.n) + " x " +
                    st_dtype_name(a.dtype) + ") is outside the file (" + std::to_string(in.size) + " bytes)", in.path, piece.name);
        return {};
    }

    // Every factor's byte range and shape, before exec.cc does pointer arithmetic with them.
    merge_status check_factor(const merge_piece & piece, const merge_lowrank_factor & f, uint64_t elements, const std::string & what) {
        if (f.file >= job_.inputs.size())
            return fail(merge_error::INVALID_ARGUMENT, what + " refers to input " + std::to_string(f.file) + " of " + std::to_string(job_.inputs.size()), {}, piece.name);
        const merge_input & in = job_.inputs[f.file];
        if (!st_dtype_valid(f.dtype) || !st_dtype_is_math(f.dtype))
            return fail(merge_error::DTYPE_UNSUPPORTED, what + ": cannot compute with dtype id " + std::to_string(f.dtype), in.path, piece.name);
        uint64_t end;
        if (!range_inside(f.offset, elements, st_dtype_size(f.dtype), in.size, &end))
            return fail(merge_error::INVALID_OFFSET, what + " at offset " + std::to_string(f.offset) + " (" + std::to_string(elements) + " x " + st_dtype_name(f.dtype) +
                    ") is outside the file (" + std::to_string(in.size) + " bytes)", in.path, piece.name);
        return {};
    }

    merge_status check_product(const merge_piece & piece, const merge_lowrank & lr, const merge_lowrank_product & pr, const std::string & what) {
        if (pr.rank < 1 || pr.rank > MERGE_LOWRANK_MAX_RANK)
            return fail(merge_error::SHAPE_INVALID, what + ": rank " + std::to_string(pr.rank) + " is outside [1, " + std::to_string(MERGE_LOWRANK_MAX_RANK) + "]", {}, piece.name);
        uint64_t up_n, down_n;
        if (mul_overflows(lr.rows, pr.rank, &up_n) || mul_overflows(lr.cols, pr.rank, &down_n))
            return fail(merge_error::SIZE_OVERFLOW, what + ": factor sizes overflow", {}, piece.name);
        merge_status s = check_factor(piece, pr.up, up_n, what + " up factor");
        if (!s.ok()) return s;
        return check_factor(piece, pr.down, down_n, what + " down factor");
    }

    merge_status check_lowrank(const merge_piece & piece, const merge_lowrank & lr, const std::string & where) {
        uint64_t n;
        if (lr.rows < 1 || lr.cols < 1 || mul_overflows(lr.rows, lr.cols, &n) || n != piece.n)
            return fail(merge_error::SHAPE_MISMATCH, where + ": low-rank operand of " + std::to_string(lr.rows) + " x " + std::to_string(lr.cols) +
                    " elements for a piece of " + std::to_string(piece.n), {}, piece.name);
        merge_status s = check_product(piece, lr, lr.product, where + ": low-rank");
        if (!s.ok() || lr.hadamard.rank == 0) return s;
        return check_product(piece, lr, lr.hadamard, where + ": low-rank hadamard");
    }

    merge_status check_kron_factor(const merge_piece & piece, const merge_kron_factor & f, const std::string & what) {
        uint64_t n;
        if (f.rows < 1 || f.cols < 1 || mul_overflows(f.rows, f.cols, &n)) return fail(merge_error::SHAPE_INVALID, what + ": empty or oversized factor", {}, piece.name);
        if (f.product.rank == 0) return check_factor(piece, f.full, n, what);
        merge_lowrank lr;
        lr.rows = f.rows;
        lr.cols = f.cols;
        return check_product(piece, lr, f.product, what);
    }

    merge_status check_kronecker(const merge_piece & piece, const merge_kronecker & k, const std::string & where) {
        uint64_t n, module_rows, cols, end;
        const bool shape_ok = k.rows >= 1 && k.cols >= 1 && k.kernel >= 1 && k.b.cols % k.kernel == 0 && !mul_overflows(k.rows, k.cols, &n) && n == piece.n &&
                              !mul_overflows(k.a.rows, k.b.rows, &module_rows) && !add_overflows(k.row_start, k.rows, &end) && end <= module_rows &&
                              !mul_overflows(k.a.cols, k.b.cols, &cols) && cols == k.cols;
        if (!shape_ok)
            return fail(merge_error::SHAPE_MISMATCH, where + ": Kronecker operand of [" + std::to_string(k.a.rows) + ", " + std::to_string(k.a.cols) + "] x [" + std::to_string(k.b.rows) + ", " +
                    std::to_string(k.b.cols) + "] does not give rows " + std::to_string(k.row_start) + "+" + std::to_string(k.rows) + " x " + std::to_string(k.cols) + " for a piece of " + std::to_string(piece.n), {}, piece.name);
        merge_status s = check_kron_factor(piece, k.a, where + ": Kronecker factor a");
        if (!s.ok()) return s;
        return check_kron_factor(piece, k.b, where + ": Kronecker factor b");
    }

    merge_status check_piece(size_t p) {
        const merge_piece & piece = job_.pieces[p];
        for (size_t k = 0; k < piece.ops.size(); k++) {
            const merge_op & op = piece.ops[k];
            const std::string where = "op " + std::to_string(k);
            if (op.kernel >= MERGE_KERNEL_COUNT) return fail(merge_error::INVALID_ARGUMENT, where + ": unknown kernel id " + std::to_string(op.kernel), {}, piece.name);
            if (op.args.size() > MERGE_MAX_ARGS) return fail(merge_error::INVALID_ARGUMENT, where + ": too many operands", {}, piece.name);
            if (op.params.size() > max_params) return fail(merge_error::INVALID_ARGUMENT, where + ": too many params", {}, piece.name);
            if (op.stats.size() > MERGE_MAX_STATS || op.ints.size() > MERGE_MAX_INTS)
                return fail(merge_error::INVALID_ARGUMENT, where + ": too many stats or ints", {}, piece.name);
            if (op.kernel >= MERGE_KERNEL_TASK_MERGE) {
                std::string why;
                if (!merge_many_check(op.kernel, op.args.size(), op.params.size(), op.stats.size(), op.ints.data(), op.ints.size(), &why))
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + why, {}, piece.name);
            } else {
                if (op.args.size() != merge_kernel_arity(op.kernel))
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + merge_kernel_name(op.kernel) + " takes " + std::to_string(merge_kernel_arity(op.kernel)) +
                            " operands, got " + std::to_string(op.args.size()), {}, piece.name);
                if (op.params.size() != merge_kernel_n_params(op.kernel))
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + merge_kernel_name(op.kernel) + " takes " + std::to_string(merge_kernel_n_params(op.kernel)) +
                            " params, got " + std::to_string(op.params.size()), {}, piece.name);
                if (!op.stats.empty() || !op.ints.empty())
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + merge_kernel_name(op.kernel) + " takes no stats or ints", {}, piece.name);
            }
            for (uint32_t r : op.stats)
                if (r >= piece.reductions.size())
                    return fail(merge_error::INVALID_ARGUMENT, where + ": reads reduction " + std::to_string(r) + " of " + std::to_string(piece.reductions.size()), {}, piece.name);
            for (size_t j = 0; j < op.stats.size(); j++) {
                // add-cosine reads its first three stats per column, with its own column count; every other stat is one value.
                const merge_reduction & red = piece.reductions[op.stats[j]];
                const bool per_column = op.kernel == MERGE_KERNEL_ADD_COSINE && j < 3;
                const uint64_t want = per_column ? op.ints[1] : 0;
                if (red.columns != want || (per_column && red.kind == MERGE_REDUCTION_KTH_MAGNITUDE))
                    return fail(merge_error::INVALID_ARGUMENT, where + ": stat " + std::to_string(j) + (per_column ? " must be a per-column sum over " + std::to_string(want) + " columns" : " must be a single value, not per column"), {}, piece.name);
            }
            uint64_t last_index;
            if (add_overflows(op.element_start, piece.n, &last_index)) return fail(merge_error::INVALID_ARGUMENT, where + ": elementStart overflows", {}, piece.name);
            for (size_t j = 0; j < op.params.size(); j++)
                if (!std::isfinite(op.params[j]))
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + merge_kernel_name(op.kernel) + " parameter " + std::to_string(j) + " is not a finite number", {}, piece.name);
            if (!st_dtype_valid(op.round) || !st_dtype_is_math(op.round))
                return fail(merge_error::DTYPE_UNSUPPORTED, where + ": cannot round through dtype id " + std::to_string(op.round), {}, piece.name);
            for (const merge_operand & a : op.args) {
                if (a.kind == MERGE_OPERAND_OP) {
                    if (a.index >= k) return fail(merge_error::INVALID_ARGUMENT, where + ": operand refers to op " + std::to_string(a.index) + ", not an earlier op", {}, piece.name);
                } else if (a.kind == MERGE_OPERAND_INPUT) {
                    merge_status s = check_input_operand(piece, a, true);
                    if (!s.ok()) return s;
                } else if (a.kind == MERGE_OPERAND_KRONECKER) {
                    if (a.index >= piece.kroneckers.size())
                        return fail(merge_error::INVALID_ARGUMENT, where + ": Kronecker operand " + std::to_string(a.index) + " of " + std::to_string(piece.kroneckers.size()), {}, piece.name);
                    merge_status s = check_kronecker(piece, piece.kroneckers[a.index], where);
                    if (!s.ok()) return s;
                } else if (a.kind == MERGE_OPERAND_LOWRANK) {
                    if (a.index >= piece.lowranks.size())
                        return fail(merge_error::INVALID_ARGUMENT, where + ": low-rank operand " + std::to_string(a.index) + " of " + std::to_string(piece.lowranks.size()), {}, piece.name);
                    merge_status s = check_lowrank(piece, piece.lowranks[a.index], where);
                    if (!s.ok()) return s;
                } else {
                    return fail(merge_error::INVALID_ARGUMENT, where + ": unknown operand kind", {}, piece.name);
                }
            }
        }
        merge_status rs = check_reductions(piece);
        if (!rs.ok()) return rs;
        for (size_t w = 0; w < piece.writes.size(); w++) {
            const merge_write & wr = piece.writes[w];
            const std::string where = "write " + std::to_string(w);
            if (wr.output >= job_.outputs.size())
                return fail(merge_error::INVALID_ARGUMENT, where + ": refers to output " + std::to_string(wr.output) + " of " + std::to_string(job_.outputs.size()), {}, piece.name);
            const merge_output & out = job_.outputs[wr.output];
            if (!st_dtype_valid(wr.dtype)) return fail(merge_error::DTYPE_UNSUPPORTED, where + ": invalid dtype id " + std::to_string(wr.dtype), out.path, piece.name);
            const merge_operand & src = wr.source;
            if (src.kind == MERGE_OPERAND_OP) {
                if (src.index >= piece.ops.size())
                    return fail(merge_error::INVALID_ARGUMENT, where + ": source refers to op " + std::to_string(src.index) + " of " + std::to_string(piece.ops.size()), {}, piece.name);
                if (!st_dtype_is_math(wr.dtype))
                    return fail(merge_error::DTYPE_UNSUPPORTED, where + std::string(": cannot store a computed value as ") + st_dtype_name(wr.dtype), out.path, piece.name);
            } else if (src.kind == MERGE_OPERAND_INPUT) {
                const bool raw = src.dtype == wr.dtype;
                if (!raw && !st_dtype_is_math(wr.dtype))
                    return fail(merge_error::DTYPE_UNSUPPORTED, where + std::string(": cannot convert to ") + st_dtype_name(wr.dtype), out.path, piece.name);
                merge_status s = check_input_operand(piece, src, !raw);
                if (!s.ok()) return s;
            } else {
                return fail(merge_error::INVALID_ARGUMENT, where + ": unknown source kind", {}, piece.name);
            }
            uint64_t end;
            if (!range_inside(wr.offset, piece.n, st_dtype_size(wr.dtype), out.size, &end))
                return fail(merge_error::INVALID_OFFSET, where + ": range at offset " + std::to_string(wr.offset) + " (" + std::to_string(piece.n) + " x " +
                        st_dtype_name(wr.dtype) + ") is outside the output (" + std::to_string(out.size) + " bytes)", out.path, piece.name);
            spans_[wr.output].push_back({wr.offset, end, p});
        }
        return {};
    }

    // Reductions read inputs or ops that do not (even through other ops) read reduction results.
    merge_status check_reductions(const merge_piece & piece) {
        if (piece.reductions.empty()) return {};
        if (piece.reductions.size() > MERGE_MAX_REDUCTIONS)
            return fail(merge_error::INVALID_ARGUMENT, "too many reductions (" + std::to_string(piece.reductions.size()) + ")", {}, piece.name);
        std::vector<bool> needed(piece.ops.size(), false);
        for (size_t r = 0; r < piece.reductions.size(); r++) {
            const merge_reduction & red = piece.reductions[r];
            const std::string where = "reduction " + std::to_string(r);
            if (red.kind >= MERGE_REDUCTION_COUNT) return fail(merge_error::INVALID_ARGUMENT, where + ": unknown kind " + std::to_string(red.kind), {}, piece.name);
            if (red.args.size() != merge_reduction_arity(red.kind))
                return fail(merge_error::INVALID_ARGUMENT, where + ": " + merge_reduction_name(red.kind) + " takes " + std::to_string(merge_reduction_arity(red.kind)) + " operands", {}, piece.name);
            if (red.columns > 0) {
                if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE) return fail(merge_error::INVALID_ARGUMENT, where + ": kth-magnitude has no per-column form", {}, piece.name);
                if (red.columns > MERGE_MAX_COLUMNS || piece.n % red.columns != 0)
                    return fail(merge_error::INVALID_ARGUMENT, where + ": " + std::to_string(red.columns) + " columns do not divide the piece's " + std::to_string(piece.n) + " elements (at most " +
                            std::to_string(MERGE_MAX_COLUMNS) + ")", {}, piece.name);
            }
            if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE) {
                if (red.k > piece.n) return fail(merge_error::INVALID_ARGUMENT, where + ": k = " + std::to_string(red.k) + " is more than the piece's " + std::to_string(piece.n) + " elements", {}, piece.name);
                if (piece.n >= (1ull << 32)) return fail(merge_error::INVALID_ARGUMENT, where + ": kth-magnitude needs fewer than 2^32 elements", {}, piece.name);
            }
            for (const merge_operand & a : red.args) {
                if (a.kind == MERGE_OPERAND_OP) {
                    if (a.index >= piece.ops.size()) return fail(merge_error::INVALID_ARGUMENT, where + ": refers to op " + std::to_string(a.index), {}, piece.name);
                    needed[a.index] = true;
                } else if (a.kind == MERGE_OPERAND_INPUT) {
                    merge_status s = check_input_operand(piece, a, true);
                    if (!s.ok()) return s;
                } else {
                    return fail(merge_error::INVALID_ARGUMENT, where + ": unknown operand kind", {}, piece.name);
                }
            }
        }
        for (size_t k = piece.ops.size(); k-- > 0;) {
            if (!needed[k]) continue;
            if (!piece.ops[k].stats.empty())
                return fail(merge_error::INVALID_ARGUMENT, "op " + std::to_string(k) + " reads reduction results but a reduction reads it", {}, piece.name);
            for (const merge_operand & a : piece.ops[k].args)
                if (a.kind == MERGE_OPERAND_OP) needed[a.index] = true;
        }
        return {};
    }

    // Overlapping writes would make the bytes depend on thread timing: refuse them.
    merge_status check_overlaps(size_t o) {
        std::vector<span> & v = spans_[o];
        std::sort(v.begin(), v.end(), [](const span & a, const span & b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
        const span * prev = nullptr;
        for (const span & s : v) {
            if (s.begin == s.end) continue;
            if (prev && s.begin < prev->end) {
                const size_t p = s.piece != SIZE_MAX ? s.piece : prev->piece;
                return fail(merge_error::INVALID_OFFSET, "byte ranges overlap in the output at offset " + std::to_string(s.begin), job_.outputs[o].path,
                        p != SIZE_MAX ? job_.pieces[p].name : std::string());
            }
            prev = &s;
        }
        return {};
    }
};

} // namespace

merge_status merge_job_validate(const merge_job & job) {
    try {
        return validator(job).run();
    } catch (const std::bad_alloc &) {
        return merge_status::fail(merge_error::INTERNAL, "out of memory while validating the job");
    }
}
