#include "exec.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <sys/mman.h>

#include "dtype.h"
#include "lowrank.h"
#include "many_kernels.h"
#include "method_kernels.h"
#include "reductions.h"
#include "slerp_fused.h"

exec_scratch::exec_scratch(size_t max_ops, size_t block, size_t n_outputs)
    : tags_(max_ops + MERGE_MAX_ARGS + EXEC_EXTRA_SLOTS), nonfinite_(n_outputs), n_slots_(max_ops + MERGE_MAX_ARGS + EXEC_EXTRA_SLOTS), block_(block) {
    void * p = nullptr;
    if (posix_memalign(&p, 64, n_slots_ * block_ * sizeof(float)) != 0) throw std::bad_alloc();
    data_ = (float *) p;
    // mmap, not malloc: the pages stay untouched (not private memory) unless a job reads bands.
    const size_t band_bytes = (EXEC_LOWRANK_BANDS + 1) * EXEC_LOWRANK_BAND * sizeof(float);
    void * b = mmap(nullptr, band_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) {
        free(data_);
        throw std::bad_alloc();
    }
    bands_data_ = (float *) b;
}

exec_scratch::~exec_scratch() {
    free(data_);
    munmap(bands_data_, (EXEC_LOWRANK_BANDS + 1) * EXEC_LOWRANK_BAND * sizeof(float));
}

const float * exec_scratch::band_find(const void * key, uint64_t i, size_t m) {
    for (size_t e = 0; e < EXEC_LOWRANK_BANDS; e++) {
        band & b = bands_[e];
        if (b.key == key && b.i0 <= i && i + m <= b.i1) {
            b.generation = generation_;
            return bands_data_ + e * EXEC_LOWRANK_BAND + (i - b.i0);
        }
    }
    return nullptr;
}

float * exec_scratch::band_claim(const void * key, uint64_t i0, uint64_t i1) {
    size_t pick = EXEC_LOWRANK_BANDS;
    for (size_t e = 0; e < EXEC_LOWRANK_BANDS; e++) {
        if (bands_[e].generation == generation_) continue; // read by this block: keep it
        if (pick == EXEC_LOWRANK_BANDS || bands_[e].generation < bands_[pick].generation) pick = e;
    }
    if (pick == EXEC_LOWRANK_BANDS) return nullptr;
    bands_[pick] = {key, i0, i1, generation_};
    return bands_data_ + pick * EXEC_LOWRANK_BAND;
}

size_t exec_block_size(size_t max_ops) {
    // ~256 KiB of scratch per thread for small recipes; long recipes get shorter blocks.
    const size_t budget = (256u << 10) / sizeof(float);
    size_t block = budget / (max_ops + MERGE_MAX_ARGS + EXEC_EXTRA_SLOTS);
    if (block > 4096) block = 4096;
    block &= ~(size_t) 63;
    return block < 64 ? 64 : block;
}

namespace {

// Counting on the stored bytes, after the store: the SIMD kernels stay as they are, and the
// pattern is the output dtype's own (an fp32 70000 stored as fp16 counts as the infinity it
// became). With `src` (a converted input copy), only elements whose fp32 source is finite count.
// Branch-free loops over the bits, which the compiler vectorises.
template <typename T>
void count_pattern(const uint8_t * p, const float * src, size_t m, T abs_mask, T inf_bits, bool has_inf, merge_nonfinite * c) {
    // Almost every block has no NaN and no infinity: an OR over "exponent all ones" (a loop the
    // compiler turns into compares of whole vectors) says so at a few percent of the counting
    // loop's cost, whose 64-bit counters cost ~6% of a bake's CPU (perf).
    T any = 0;
    for (size_t i = 0; i < m; i++) {
        T v;
        std::memcpy(&v, p + i * sizeof(T), sizeof(T));
        const T a = (T) (v & abs_mask);
        any |= (T) (has_inf ? a >= inf_bits : a == inf_bits);
    }
    if (any == 0) return;
    uint64_t nan = 0, inf = 0;
    for (size_t i = 0; i < m; i++) {
        T v;
        std::memcpy(&v, p + i * sizeof(T), sizeof(T));
        const T a = (T) (v & abs_mask);
        uint64_t fresh = 1;
        if (src) {
            uint32_t b;
            std::memcpy(&b, src + i, 4);
            fresh = (b & 0x7fffffffu) < 0x7f800000u;
        }
        // e4m3fn has no infinity: S.1111.111 (inf_bits) is its only NaN.
        nan += fresh & (has_inf ? a > inf_bits : a == inf_bits);
        inf += fresh & (has_inf && a == inf_bits);
    }
    c->nan += nan;
    c->inf += inf;
}

void count_nonfinite(uint32_t dtype, const uint8_t * p, const float * src, size_t m, merge_nonfinite * c) {
    switch (dtype) {
        case ST_DTYPE_F32: count_pattern<uint32_t>(p, src, m, 0x7fffffffu, 0x7f800000u, true, c); break;
        case ST_DTYPE_F64: count_pattern<uint64_t>(p, src, m, 0x7fffffffffffffffull, 0x7ff0000000000000ull, true, c); break;
        case ST_DTYPE_F16: count_pattern<uint16_t>(p, src, m, 0x7fff, 0x7c00, true, c); break;
        case ST_DTYPE_BF16: count_pattern<uint16_t>(p, src, m, 0x7fff, 0x7f80, true, c); break;
        case ST_DTYPE_F8_E5M2: count_pattern<uint8_t>(p, src, m, 0x7f, 0x7c, true, c); break;
        case ST_DTYPE_F8_E4M3: count_pattern<uint8_t>(p, src, m, 0x7f, 0x7f, false, c); break;
        default: break;
    }
}

/**
 * Slot layout: [0, n_ops) op results, then MERGE_MAX_ARGS operand slots, then one conversion
 * slot, then two low-rank slots (a factor row's widened values; a LoHa's second product).
 */
struct block_eval {
    const exec_context & ctx;
    exec_scratch & scratch;
    const merge_piece & piece;
    size_t n_ops;
    size_t p; // piece index (its reduction results)
    // End of the element range being written (exec_write_range), 0 elsewhere: low-rank
    // operands are then computed in bands up to it, never past it (no work a later range redoes).
    uint64_t range_end = 0;

    /** Input a's elements [i, i + m): in the window's read copy when it holds them, else in the map. */
    const uint8_t * input_ptr(const merge_operand & a, uint64_t i, uint64_t m) const { return exec_input_ptr(ctx, a, i, m); }

    // F32 inputs at 4-byte aligned addresses are read in place; everything else is widened
    // into `slot` (a plain copy for unaligned F32: same bits either way).
    lowrank_factors factors(const merge_lowrank_product & p) const {
        const merge_kernels * kt = ctx.kernels;
        return {(*ctx.inputs)[p.up.file]->data() + p.up.offset, (*ctx.inputs)[p.down.file]->data() + p.down.offset, merge_kernels_load(kt, p.up.dtype),
                merge_kernels_load(kt, p.down.dtype), (uint32_t) st_dtype_size(p.up.dtype), (uint32_t) st_dtype_size(p.down.dtype), p.rank, p.down.dtype, kt};
    }

    // Ranges, shapes and dtypes were checked by merge_job_validate (check_lowrank).
    // Inside a write range the values come from a band (exec.h): a block covers a row or less
    // of a wide factor, and the product's cost is widening `down` vectors that then serve only
    // that row. Each element's value is the same fixed-order sum whatever range computes it.
    const float * lowrank(const merge_lowrank & lr, uint64_t i, size_t m, float * slot) const {
        if (range_end >= i + m) {
            if (const float * hit = scratch.band_find(&lr, i, m)) return hit;
            const uint64_t end = range_end - i < EXEC_LOWRANK_BAND ? range_end : i + EXEC_LOWRANK_BAND;
            if (end - i > m) {
                if (float * band = scratch.band_claim(&lr, i, end)) {
                    lowrank_values(lr, i, (size_t) (end - i), band, scratch.band_second());
                    return band;
                }
            }
        }
        lowrank_values(lr, i, m, slot, scratch.slot(n_ops + MERGE_MAX_ARGS + 2));
        return slot;
    }

    // Elements [i, i + m) into out; `second` (m floats) holds a Hadamard factor's product.
    void lowrank_values(const merge_lowrank & lr, uint64_t i, size_t m, float * out, float * second) const {
        float * tmp = scratch.slot(n_ops + MERGE_MAX_ARGS + 1);
        scratch.forget(n_ops + MERGE_MAX_ARGS + 1);
        scratch.forget(n_ops + MERGE_MAX_ARGS + 2);
        if (lr.hadamard.rank != 0) {
            lowrank_product_f32(factors(lr.hadamard), lr.cols, i, m, second, tmp, scratch.block());
            lowrank_product_f32(factors(lr.product), lr.cols, i, m, out, tmp, scratch.block());
            lowrank_hadamard_f32(out, second, m);
        } else {
            lowrank_product_f32(factors(lr.product), lr.cols, i, m, out, tmp, scratch.block());
        }
    }

    kron_factor_view kron_view(const merge_kron_factor & f) const {
        const merge_kernels * kt = ctx.kernels;
        kron_factor_view v{};
        v.cols = f.cols;
        v.rank = f.product.rank;
        if (v.rank == 0) {
            v.full = (*ctx.inputs)[f.full.file]->data() + f.full.offset;
            v.load_full = merge_kernels_load(kt, f.full.dtype);
            v.full_size = (uint32_t) st_dtype_size(f.full.dtype);
        } else {
            const lowrank_factors p = factors(f.product);
            v.up = p.up;
            v.down = p.down;
            v.load_up = p.load_up;
            v.load_down = p.load_down;
            v.up_size = p.up_size;
            v.down_size = p.down_size;
        }
        return v;
    }

    const float * operand(const merge_operand & a, uint64_t i, size_t m, float * slot) const {
        if (a.kind == MERGE_OPERAND_OP) return scratch.slot(a.index);
        const size_t index = scratch.slot_index(slot);
        if (a.kind != MERGE_OPERAND_INPUT) scratch.forget(index); // computed into the slot below
        if (a.kind == MERGE_OPERAND_KRONECKER) {
            const merge_kronecker & k = piece.kroneckers[a.index];
            kronecker_f32(kron_view(k.a), kron_view(k.b), k.b.rows, k.kernel, k.row_start, k.cols, i, m, slot);
            return slot;
        }
        if (a.kind == MERGE_OPERAND_LOWRANK) return lowrank(piece.lowranks[a.index], i, m, slot);
        const uint8_t * src = input_ptr(a, i, m);
        if (a.dtype == ST_DTYPE_F32 && ((uintptr_t) src & 3) == 0) return (const float *) src;
        if (scratch.holds(index, src, a.dtype, m)) return slot; // widened by an earlier op of this block
        merge_kernels_load(ctx.kernels, a.dtype)(slot, src, m);
        scratch.tag(index, src, a.dtype, m);
        return slot;
    }

    /** Many-model op `op`'s kernel arguments on elements from i, its statistics put in stats and columns (MERGE_MAX_STATS each). */
    merge_many_args many_args(const merge_op & op, const float * const * x, uint64_t i, double * stats, const double ** columns) const {
        const std::vector<merge_reduction_result> & results = (*ctx.stats)[p];
        for (size_t j = 0; j < op.stats.size(); j++) {
            stats[j] = results[op.stats[j]].value;
            columns[j] = results[op.stats[j]].columns.data();
        }
        return merge_many_args{x, (uint32_t) op.args.size(), op.params.data(), (uint32_t) op.params.size(), stats, (uint32_t) op.stats.size(),
                               op.ints.data(), (uint32_t) op.ints.size(), op.element_start + i, columns};
    }

    /** Task-merge op k on elements [i, i + m) by the fused kernel f, straight from its 16-bit inputs to out (fused_task_merge). */
    void task_merge_half(merge_task_merge_half_fn f, uint32_t k, uint64_t i, size_t m, uint8_t * out) const {
        const merge_op & op = piece.ops[k];
        const uint8_t * src[MERGE_MAX_ARGS];
        for (size_t j = 0; j < op.args.size(); j++) src[j] = input_ptr(op.args[j], i, m);
        double stats[MERGE_MAX_STATS];
        const double * columns[MERGE_MAX_STATS];
        f(out, src, many_args(op, nullptr, i, stats, columns), m);
    }

    /**
     * `round` false skips the op's fp16/bf16 rounding: only for the op a write stores in that
     * same dtype, where the store rounds identically (narrowing to fp16, bf16 or fp8 is idempotent,
     * NaN payloads included) and no later op of this evaluation reads the result.
     */
    void run_op(uint32_t k, uint64_t i, size_t m, bool round = true) const {
        const merge_op & op = piece.ops[k];
        const float * x[MERGE_MAX_ARGS] = {};
        for (size_t j = 0; j < op.args.size(); j++) x[j] = operand(op.args[j], i, m, scratch.slot(n_ops + j));
        float * r = scratch.slot(k);
        const merge_kernels * kt = ctx.kernels;
        switch (op.kernel) {
            case MERGE_KERNEL_COPY: std::memcpy(r, x[0], m * sizeof(float)); break;
            case MERGE_KERNEL_WEIGHTED_SUM: kt->weighted_sum(r, x[0], x[1], op.params[0], op.params[1], m); break;
            case MERGE_KERNEL_ADD_DIFFERENCE: kt->add_difference(r, x[0], x[1], x[2], op.params[0], m); break;
            case MERGE_KERNEL_LERP: kt->lerp(r, x[0], x[1], op.params[0], m); break;
            default: {
                if (op.kernel >= MERGE_KERNEL_TASK_MERGE) {
                    double stats[MERGE_MAX_STATS];
                    const double * columns[MERGE_MAX_STATS];
                    merge_many_kernel(op.kernel, kt->isa)(r, many_args(op, x, i, stats, columns), m); // ids and counts checked by validation
                    break;
                }
                const merge_method_fn f = merge_method_kernel_for(kt, op.kernel);
                if (f) f(r, x, op.params.data(), m); // ids and counts checked by validation
                break;
            }
        }
        if (!round) return;
        if (const merge_round_fn rnd = merge_kernels_round(kt, op.round)) rnd(r, m);
    }
};

/**
 * Asks for the input lines of the next block of a write reading several inputs (TIES's base and
 * models, a weighted sum's two): each block's loads then find their lines on the way, where the
 * hardware prefetchers, starting afresh on every 4 KiB page of each stream, would let the first
 * loads of each page wait. A prefetch never faults (a truncated input faults in the load).
 */
void prefetch_inputs(const exec_context & ctx, const plan_write & pw, uint64_t i, size_t m) {
    for (const plan_input_ref & r : pw.inputs) {
        const uint64_t offset = r.offset + i * r.elem_size, length = (uint64_t) m * r.elem_size;
        const uint8_t * a = ctx.held && !ctx.held->runs.empty() ? ctx.held->find(r.file, offset, length) : nullptr;
        if (!a && ctx.staged && *ctx.staged) a = (*ctx.staged)->find(r.file, offset, length);
        if (!a) {
            const uint8_t * map = (*ctx.inputs)[r.file]->data();
            if (!map) continue;
            a = map + offset;
        }
        for (const uint8_t * l = (const uint8_t *) ((uintptr_t) a & ~(uintptr_t) 63), * e = a + length; l < e; l += 64) __builtin_prefetch(l, 0, 3);
    }
}

/**
 * The ISA's fused task merge (kernels.h merge_task_merge_half_fn) when it gives write w's bytes,
 * else nullptr: the write stores as fp16 or bf16 a task-merge op without DROP, the only op it
 * runs, every operand of it an input of one dtype, fp16 or bf16, the op's own rounding none or
 * the write's dtype (which the store repeats).
 */
merge_task_merge_half_fn fused_task_merge(const exec_context & ctx, const merge_piece & piece, const merge_write & wr, const plan_write & pw) {
    if (!ctx.fused_task_merge || wr.source.kind != MERGE_OPERAND_OP) return nullptr;
    if (pw.ops.size() != 1 || pw.ops[0] != wr.source.index) return nullptr;
    const merge_op & op = piece.ops[wr.source.index];
    if (op.kernel != MERGE_KERNEL_TASK_MERGE || (op.ints[0] & TASK_MERGE_DROP) || op.args.empty()) return nullptr;
    if (op.round != wr.dtype && merge_kernels_round(ctx.kernels, op.round) != nullptr) return nullptr;
    for (const merge_operand & a : op.args)
        if (a.kind != MERGE_OPERAND_INPUT || a.dtype != op.args[0].dtype) return nullptr;
    return merge_task_merge_half_for(ctx.kernels, op.args[0].dtype, wr.dtype);
}

/**
 * The ISA's fused SLERP store (slerp_fused.h) when it gives write w's bytes, else nullptr: the
 * write stores as fp16 a SLERP op, the only op it runs, both operands F32 or F16 inputs, the op's
 * own rounding none or fp16 (which the fp16 store repeats).
 */
slerp_store_f16_fn fused_slerp(const exec_context & ctx, const merge_piece & piece, const merge_write & wr, const plan_write & pw) {
    if (!ctx.fused_slerp || wr.dtype != ST_DTYPE_F16 || wr.source.kind != MERGE_OPERAND_OP) return nullptr;
    if (pw.ops.size() != 1 || pw.ops[0] != wr.source.index) return nullptr;
    const merge_op & op = piece.ops[wr.source.index];
    if (op.kernel != MERGE_KERNEL_SLERP) return nullptr;
    if (op.round != ST_DTYPE_F16 && merge_kernels_round(ctx.kernels, op.round) != nullptr) return nullptr;
    for (const merge_operand & a : op.args)
        if (a.kind != MERGE_OPERAND_INPUT || (a.dtype != ST_DTYPE_F32 && a.dtype != ST_DTYPE_F16)) return nullptr;
    return slerp_store_f16_for(ctx.kernels->isa);
}

/**
 * Elements [i0, i1) of a write that has a pair table: a lookup per element from the two fp8
 * inputs' codes, in chunks whose output bytes the non-finite count reads while they are in L1.
 * Those bytes are the generic path's (pair_table.h), so they count the same.
 */
void write_by_pair_table(const block_eval & ev, const merge_write & wr, const plan_write & pw, const uint8_t * table, uint64_t i0, uint64_t i1, uint8_t * dst) {
    constexpr uint64_t chunk = 16384;
    const merge_op & op = ev.piece.ops[wr.source.index];
    const uint8_t * a = ev.input_ptr(op.args[0], i0, i1 - i0), * b = ev.input_ptr(op.args[1], i0, i1 - i0);
    const bool count = wr.output < ev.scratch.nonfinite().size();
    for (uint64_t i = 0; i < i1 - i0; i += chunk) {
        const size_t m = (size_t) (i1 - i0 - i < chunk ? i1 - i0 - i : chunk);
        uint8_t * out = dst + i * pw.out_size;
        ev.ctx.kernels->pair_lookup(out, a + i, b + i, table, pw.out_size, m);
        if (count) count_nonfinite(wr.dtype, out, nullptr, m, &ev.scratch.nonfinite()[wr.output]);
    }
}

} // namespace

void exec_write_range(const exec_context & ctx, exec_scratch & scratch, size_t p, size_t w, uint64_t i0, uint64_t i1, uint8_t * dst) {
    if (i1 <= i0) return;
    const merge_piece & piece = ctx.job->pieces[p];
    const merge_write & wr = piece.writes[w];
    const plan_write & pw = ctx.plan->writes[p][w];
    block_eval ev{ctx, scratch, piece, piece.ops.size(), p, i1};
    const uint8_t * table = ctx.pair_tables ? ctx.pair_tables->find(p, w) : nullptr;
    if (pw.raw) {
        std::memcpy(dst, ev.input_ptr(wr.source, i0, i1 - i0), (size_t) ((i1 - i0) * pw.out_size));
    } else if (table) {
        write_by_pair_table(ev, wr, pw, table, i0, i1, dst);
    } else {
        const merge_store_fn store = merge_kernels_store(ctx.kernels, wr.dtype);
        const merge_task_merge_half_fn fused = fused_task_merge(ctx, piece, wr, pw);
        if (fused) scratch.fused_elements() += i1 - i0;
        const slerp_store_f16_fn slerp = fused ? nullptr : fused_slerp(ctx, piece, wr, pw);
        float slerp_a = 0, slerp_b = 0; // its coefficients, once for the range (the slots' kernel computes them per block)
        if (slerp) {
            double stats[MERGE_MAX_STATS];
            const double * columns[MERGE_MAX_STATS];
            merge_slerp_coefficients(ev.many_args(piece.ops[wr.source.index], nullptr, i0, stats, columns), &slerp_a, &slerp_b);
            scratch.slerp_fused_elements() += i1 - i0;
        }
        const size_t block = scratch.block();
        for (uint64_t i = i0; i < i1; i += block) {
            const size_t m = (size_t) (i1 - i < block ? i1 - i : block);
            if (i + m < i1 && pw.inputs.size() > 1) prefetch_inputs(ctx, pw, i + m, (size_t) (i1 - (i + m) < block ? i1 - (i + m) : block));
            scratch.begin_block();
            const float * v = nullptr;
            bool finite = false; // every stored value known to be finite: nothing to count
            if (fused) {
                ev.task_merge_half(fused, wr.source.index, i, m, dst + (i - i0) * pw.out_size);
            } else if (slerp) {
                const merge_op & op = piece.ops[wr.source.index];
                finite = !slerp(dst + (i - i0) * pw.out_size, ev.input_ptr(op.args[0], i, m), ev.input_ptr(op.args[1], i, m), op.args[0].dtype == ST_DTYPE_F16,
                                op.args[1].dtype == ST_DTYPE_F16, slerp_a, slerp_b, m);
            } else if (wr.source.kind == MERGE_OPERAND_INPUT) {
                v = ev.operand(wr.source, i, m, scratch.slot(ev.n_ops + MERGE_MAX_ARGS));
            } else {
                // pw.ops ascend and ops read only earlier ops: the source is the last one run.
                const uint32_t last = wr.source.index;
                const bool store_rounds = piece.ops[last].round == wr.dtype;
                for (uint32_t k : pw.ops) ev.run_op(k, i, m, !(k == last && store_rounds));
                v = scratch.slot(wr.source.index);
            }
            if (!fused && !slerp) store(dst + (i - i0) * pw.out_size, v, m);
            if (wr.output < scratch.nonfinite().size() && !finite) {
                // A converted copy (the input itself, or the planner's copy op of an input, see
                // convertedTo in plan.ts) counts only where the input was finite: compare with
                // its widened values (in place for aligned F32, else loaded again: copies only).
                const float * src = nullptr;
                if (wr.source.kind == MERGE_OPERAND_INPUT) {
                    src = v;
                } else {
                    const merge_op & op = piece.ops[wr.source.index];
                    if (op.kernel == MERGE_KERNEL_COPY && op.args[0].kind == MERGE_OPERAND_INPUT)
                        src = ev.operand(op.args[0], i, m, scratch.slot(ev.n_ops + MERGE_MAX_ARGS));
                }
                count_nonfinite(wr.dtype, dst + (i - i0) * pw.out_size, src, m, &scratch.nonfinite()[wr.output]);
            }
        }
    }
    if (ctx.release_inputs) exec_advise_inputs(ctx, p, w, i0, i1, MADV_DONTNEED);
}

void exec_run_ops(const exec_context & ctx, exec_scratch & scratch, size_t p, const std::vector<uint32_t> & ops, uint64_t i, size_t m) {
    const merge_piece & piece = ctx.job->pieces[p];
    block_eval ev{ctx, scratch, piece, piece.ops.size(), p};
    scratch.begin_block();
    for (uint32_t k : ops) ev.run_op(k, i, m);
}

const float * exec_operand(const exec_context & ctx, exec_scratch & scratch, size_t p, const merge_operand & a, uint64_t i, size_t m, size_t slot) {
    const merge_piece & piece = ctx.job->pieces[p];
    block_eval ev{ctx, scratch, piece, piece.ops.size(), p};
    return ev.operand(a, i, m, scratch.slot(slot));
}

const uint8_t * exec_input_ptr(const exec_context & ctx, const merge_operand & a, uint64_t i, uint64_t m) {
    const uint64_t size = st_dtype_size(a.dtype), offset = a.offset + i * size;
    if (ctx.held && !ctx.held->runs.empty())
        if (const uint8_t * copy = ctx.held->find(a.file, offset, m * size)) return copy;
    if (ctx.staged && *ctx.staged)
        if (const uint8_t * copy = (*ctx.staged)->find(a.file, offset, m * size)) return copy;
    return (*ctx.inputs)[a.file]->data() + offset;
}

void exec_advise_inputs(const exec_context & ctx, size_t p, size_t w, uint64_t i0, uint64_t i1, int advice) {
    if (i1 <= i0) return;
    for (const plan_input_ref & r : ctx.plan->writes[p][w].inputs)
        (*ctx.inputs)[r.file]->advise(r.offset + i0 * r.elem_size, (i1 - i0) * r.elem_size, advice);
}

void exec_collect_inputs(const exec_context & ctx, size_t p, size_t w, uint64_t i0, uint64_t i1, std::vector<prefetch_range> * out) {
    if (i1 <= i0) return;
    for (const plan_input_ref & r : ctx.plan->writes[p][w].inputs) out->push_back({r.file, r.offset + i0 * r.elem_size, (i1 - i0) * r.elem_size});
}
