#include "reductions.h"

#include <algorithm>
#include <cstring>

#include "dtype.h"
#include "kernels.h"
#include "reduction_lanes.h"

namespace {

constexpr size_t none = SIZE_MAX;
constexpr uint64_t histogram_budget = 64ull << 20;
constexpr size_t bins = 65536;

inline uint32_t key_of(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b & 0x7fffffffu;
}

/** The bin (from the top) holding the k-th largest of the counted keys, and k's rank inside it. */
void select_bin(const std::vector<uint64_t> & counts, uint64_t k, uint32_t * bin, uint64_t * rank) {
    uint64_t above = 0;
    for (size_t b = bins; b-- > 0;) {
        if (above + counts[b] >= k) {
            *bin = (uint32_t) b;
            *rank = k - above;
            return;
        }
        above += counts[b];
    }
    *bin = 0;
    *rank = k - above; // unreachable for 1 <= k <= n (validation)
}

inline bool same_operand(const merge_operand & a, const merge_operand & b) {
    return a.kind == b.kind && a.file == b.file && a.offset == b.offset && a.dtype == b.dtype && a.index == b.index;
}

} // namespace

piece_reducer::piece_reducer(const exec_context & ctx, size_t piece, unsigned threads, const reduction_options & options, reduction_key_store & store,
                             reduction_key_store & small_store)
    : ctx_(ctx), piece_(piece), threads_(threads), options_(options), store_(store) {
    const merge_piece & p = ctx.job->pieces[piece];
    n_blocks_ = (p.n + MERGE_REDUCTION_BLOCK - 1) / MERGE_REDUCTION_BLOCK;
    std::vector<bool> needed(p.ops.size(), false);
    size_t n_sums = 0, n_kth = 0;
    results_.assign(p.reductions.size(), 0.0);
    sum_index_.assign(p.reductions.size(), none);
    kth_index_.assign(p.reductions.size(), none);
    for (size_t r = 0; r < p.reductions.size(); r++) {
        const merge_reduction & red = p.reductions[r];
        for (const merge_operand & a : red.args)
            if (a.kind == MERGE_OPERAND_OP) needed[a.index] = true;
        if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE) {
            if (red.k == 0) results_[r] = MERGE_KEEP_NONE_KEY;
            else {
                kth_index_[r] = n_kth++;
                kth_reduction_.push_back(r);
            }
        } else if (red.columns == 0) {
            sum_index_[r] = n_sums++;
        }
    }
    for (size_t k = p.ops.size(); k-- > 0;)
        if (needed[k])
            for (const merge_operand & a : p.ops[k].args)
                if (a.kind == MERGE_OPERAND_OP) needed[a.index] = true;
    for (size_t k = 0; k < needed.size(); k++)
        if (needed[k]) ops_.push_back((uint32_t) k);
    n_kth_ = n_kth;
    for (uint32_t k : ops_)
        for (const merge_operand & a : p.ops[k].args) {
            if (a.kind != MERGE_OPERAND_INPUT) continue;
            if (!(*ctx.inputs)[a.file]->data()) continue;
            const input_stream st{exec_input_ptr(ctx, a, 0, p.n), (uint32_t) st_dtype_size(a.dtype)}; // the held copy, if any (exec_context::held)
            bool seen = false;
            for (const input_stream & o : streams_) seen = seen || o.data == st.data;
            if (!seen) streams_.push_back(st);
        }
    direct_ = p.n <= MERGE_DIRECT_SELECT;
    column_sums_.resize(p.reductions.size());
    bool any_columns = false;
    for (size_t r = 0; r < p.reductions.size(); r++)
        if (p.reductions[r].kind != MERGE_REDUCTION_KTH_MAGNITUDE && p.reductions[r].columns > 0) {
            column_sums_[r].assign((size_t) p.reductions[r].columns, 0.0);
            any_columns = true;
        }
    const bool bracketed = n_kth > 0 && !direct_ && options.bracket;
    mode_.assign(n_kth, direct_ ? kth_direct : (bracketed ? kth_bracketed : kth_radix));
    if (bracketed) kinds_.push_back(pass_sample);
    kinds_.push_back(pass_main);
    if (n_kth > 0 && !direct_ && !bracketed) {
        kinds_.push_back(pass_kth_low);
        start_radix();
    }
    if (any_columns) kinds_.push_back(pass_columns);
    if (n_kth > 0 && direct_) {
        cache_len_ = p.n;
        keys_ = small_store.get(n_kth * cache_len_);
    }
    if (bracketed) {
        // One allocation: per q its sample, then per q its buffer (capacity + 16 keys of vector slack).
        sample_plan_ = kth_sample_plan_for(p.n);
        const uint64_t budget_keys = KTH_BRACKET_BUDGET_BYTES / sizeof(uint32_t) / n_kth;
        const uint64_t cap = options.bracket_keys > 0 ? options.bracket_keys : std::min<uint64_t>(p.n, budget_keys);
        uint32_t * at = small_store.get(n_kth * (sample_plan_.size + cap + 16));
        sample_.resize(n_kth);
        inside_.resize(n_kth);
        for (size_t q = 0; q < n_kth; q++, at += sample_plan_.size) sample_[q] = at;
        for (size_t q = 0; q < n_kth; q++, at += cap + 16) inside_[q] = at;
        bracket_.assign(n_kth, kth_bracket{});
        for (kth_bracket & br : bracket_) br.capacity = cap;
        inside_count_.reset(new std::atomic<uint64_t>[n_kth]);
        for (size_t q = 0; q < n_kth; q++) inside_count_[q].store(0, std::memory_order_relaxed);
        counts_.assign((size_t) threads * n_kth, kth_bracket_counts{});
        scan_ = kth_bracket_scan_for(ctx.kernels->isa);
        // The fused bracket pass: every k-th's operand a weighted sum of two F16 or two BF16 inputs
        // (TIES's task vectors; the base is an operand of each, so they share its dtype) and
        // nothing else to compute in the main pass.
        kth_bracket_scan_half_sum_fn fused = nullptr;
        bool all = options.fused && n_sums == 0 && !any_columns;
        for (size_t q = 0; all && q < n_kth; q++) {
            const merge_operand & x = p.reductions[kth_reduction_[q]].args[0];
            if (x.kind != MERGE_OPERAND_OP) {
                all = false;
                break;
            }
            const merge_op & op = p.ops[x.index];
            all = op.kernel == MERGE_KERNEL_WEIGHTED_SUM && op.round == ST_DTYPE_F32 && op.args.size() == 2 && op.params.size() == 2 && op.args[0].dtype == op.args[1].dtype;
            for (size_t j = 0; all && j < 2; j++) all = op.args[j].kind == MERGE_OPERAND_INPUT && (*ctx.inputs)[op.args[j].file]->data() != nullptr;
            const kth_bracket_scan_half_sum_fn f = all ? kth_bracket_scan_half_sum_for(ctx.kernels->isa, op.args[0].dtype) : nullptr;
            all = f != nullptr && (q == 0 || f == fused);
            fused = f;
        }
        if (all) scan_half_sum_ = fused;
    }
    lanes_ = reduction_lanes_for(ctx.kernels->isa);
    // Sums fold their block values in index order chunk by chunk, and per-column sums run in
    // element order: only pieces with neither may take their blocks from the last to the first.
    descending_ = options.descending && n_sums == 0 && !any_columns;
    partials_.assign(n_sums, std::vector<double>(MERGE_REDUCTION_CHUNK_BLOCKS, 0.0));
    totals_.assign(n_sums, 0.0);
}

void piece_reducer::prefetch(uint64_t i, uint64_t m) const {
    // The first touch of a tensor's input pages: each 4 KiB page is a fresh stream to the
    // hardware prefetchers, so the loads of the next step are asked for while this one runs.
    // A prefetch never faults (a truncated input faults in the load, under the guard).
    for (const input_stream & st : streams_) {
        const uint8_t * a = st.data + i * st.elem_size, * e = a + m * st.elem_size;
        for (const uint8_t * l = (const uint8_t *) ((uintptr_t) a & ~(uintptr_t) 63); l < e; l += 64) __builtin_prefetch(l, 0, 3);
    }
}

void piece_reducer::start_radix() {
    const merge_piece & p = ctx_.job->pieces[piece_];
    n_radix_ = 0;
    for (kth_mode m : mode_) n_radix_ += m == kth_radix;
    const uint64_t fit = options_.cache_bytes / (n_kth_ * sizeof(uint32_t));
    cache_len_ = fit >= p.n ? p.n : fit / MERGE_REDUCTION_BLOCK * MERGE_REDUCTION_BLOCK;
    if (cache_len_ > 0) keys_ = store_.get(n_kth_ * cache_len_);
    const uint64_t per_thread = n_kth_ * bins * sizeof(uint32_t);
    hist_active_ = (unsigned) std::max<uint64_t>(1, std::min<uint64_t>(threads_, histogram_budget / per_thread));
    hist_.assign(hist_active_, std::vector<std::vector<uint32_t>>(n_kth_, std::vector<uint32_t>(bins, 0)));
    bucket_.assign(n_kth_, 0);
    remaining_.assign(n_kth_, 0);
}

unsigned piece_reducer::active_threads(int pass) const {
    switch (kinds_[pass]) {
        case pass_columns: return 1;
        case pass_kth_high:
        case pass_kth_low: return hist_active_;
        case pass_main: return n_radix_ > 0 ? hist_active_ : threads_;
        default: return threads_;
    }
}

namespace {
/** Sampled blocks whose runs pass_sample prefetches ahead of the one it computes. */
constexpr uint64_t sample_prefetch_blocks = 4;
} // namespace

void piece_reducer::run_block(exec_scratch & scratch, unsigned ith, int pass_index, uint64_t b) {
    const merge_piece & p = ctx_.job->pieces[piece_];
    const pass_kind kind = kinds_[pass_index];
    const size_t n_ops = p.ops.size();
    const size_t n_red = p.reductions.size();
    if (kind == pass_sample) {
        uint64_t first, count, at;
        kth_sample_run(sample_plan_, p.n, b, &first, &count, &at);
        if (count == 0) return;
        // The runs are KTH_SAMPLE_RUN elements a block apart, a stride no hardware prefetcher
        // follows, and each is the first access to its input pages: the next sampled blocks' runs
        // (in the order blocks are taken) are asked for while this one is computed.
        for (uint64_t d = 1; d <= sample_prefetch_blocks; d++) {
            const uint64_t step = d * sample_plan_.every;
            if (descending_ ? b < step : b + step >= n_blocks()) break;
            uint64_t ahead, ahead_count, ahead_at;
            kth_sample_run(sample_plan_, p.n, descending_ ? b - step : b + step, &ahead, &ahead_count, &ahead_at);
            if (ahead_count > 0) prefetch(ahead, ahead_count);
        }
        exec_run_ops(ctx_, scratch, piece_, ops_, first, (size_t) count);
        for (size_t q = 0; q < n_kth_; q++) {
            const float * x = exec_operand(ctx_, scratch, piece_, p.reductions[kth_reduction_[q]].args[0], first, (size_t) count, n_ops);
            uint32_t * keys = sample_[q] + at;
            for (uint64_t e = 0; e < count; e++) keys[e] = key_of(x[e]);
        }
        return;
    }
    const uint64_t b0 = b * MERGE_REDUCTION_BLOCK, b1 = std::min<uint64_t>(p.n, b0 + MERGE_REDUCTION_BLOCK);
    // Which k-th reductions this pass serves, by mode (q indices).
    auto serves = [&](size_t q) {
        switch (kind) {
            case pass_main: return true;
            case pass_kth_high:
            case pass_kth_low: return mode_[q] == kth_radix;
            default: return false;
        }
    };
    const bool high = kind == pass_kth_high || (kind == pass_main && n_radix_ > 0); // the radix path's first histogram
    double lanes[MERGE_MAX_REDUCTIONS][MERGE_REDUCTION_LANES];
    if (kind == pass_main)
        for (size_t r = 0; r < n_red; r++) std::fill(lanes[r], lanes[r] + MERGE_REDUCTION_LANES, 0.0);
    if (kind == pass_kth_low && b1 <= cache_len_) {
        // Every key of this block was kept by the high pass: no operand is evaluated again.
        for (size_t q = 0; q < n_kth_; q++) {
            if (!serves(q)) continue;
            uint32_t * h = hist_[ith][q].data();
            const uint32_t want = bucket_[q];
            const uint32_t * keys = keys_of(q);
            for (uint64_t e = b0; e < b1; e++) {
                const uint32_t key = keys[e];
                if ((key >> 16) == want) h[key & 0xffffu]++;
            }
        }
        return;
    }
    const size_t step = scratch.block(); // a multiple of 64, so lanes stay aligned to element indices
    uint32_t inside[4096 + 16];          // a bracket's keys of one step (scratch blocks are at most 4096)
    // The step's sum reductions, summed together (reduction_lanes.h) in groups of sum_group: each
    // member's operands have their own scratch slots (2 per member, of the MERGE_MAX_ARGS operand
    // slots), an operand already read by an earlier member is shared.
    constexpr size_t sum_group = MERGE_MAX_ARGS / 2;
    const float * sum_x[sum_group], * sum_y[sum_group];
    double * sum_lanes[sum_group];
    const merge_operand * sum_args[2 * sum_group];
    const float * sum_values[2 * sum_group];
    size_t n_sum = 0;
    for (uint64_t i = b0; i < b1; i += step) {
        const size_t m = (size_t) std::min<uint64_t>(step, b1 - i);
        if (kind != pass_columns) {
            // The step that comes next: this block's, or (at its end) the next block's first, which is
            // block b − 1 in descending order.
            if (i + m < b1 || !descending_) {
                if (i + m < p.n) prefetch(i + m, std::min<uint64_t>(step, p.n - (i + m)));
            } else if (b0 > 0) {
                prefetch(b0 - MERGE_REDUCTION_BLOCK, std::min<uint64_t>(step, MERGE_REDUCTION_BLOCK));
            }
        }
        if (kind == pass_main && scan_half_sum_) {
            // Every reduction is a bracketed k-th of a weighted sum of two F16 or two BF16 inputs (the constructor).
            for (size_t q = 0; q < n_kth_; q++) {
                const merge_op & op = p.ops[p.reductions[kth_reduction_[q]].args[0].index];
                const kth_bracket & br = bracket_[q];
                const size_t got = scan_half_sum_(exec_input_ptr(ctx_, op.args[0], i, m), exec_input_ptr(ctx_, op.args[1], i, m), op.params[0], op.params[1], m, br.lo, br.hi,
                                                 &counts_[(size_t) ith * n_kth_ + q], inside);
                if (got == 0) continue;
                const uint64_t at = inside_count_[q].fetch_add(got, std::memory_order_relaxed);
                if (at + got <= br.capacity) std::memcpy(inside_[q] + at, inside, got * sizeof(uint32_t));
            }
            continue;
        }
        exec_run_ops(ctx_, scratch, piece_, ops_, i, m);
        // Operand a of a sum member: shared with an earlier member that read it, else into `slot`.
        auto sum_operand = [&](const merge_operand & a, size_t slot) {
            for (size_t at = 0; at < slot - n_ops; at++)
                if (same_operand(*sum_args[at], a)) return sum_values[at];
            return exec_operand(ctx_, scratch, piece_, a, i, m, slot);
        };
        auto flush_sums = [&] {
            if (n_sum > 0) lanes_(n_sum, sum_x, sum_y, sum_lanes, m);
            n_sum = 0;
        };
        for (size_t r = 0; r < n_red; r++) {
            const merge_reduction & red = p.reductions[r];
            if (kind == pass_columns) {
                // One thread, blocks in order: each column's sum runs in element (row) order.
                if (column_sums_[r].empty()) continue;
                const float * x = exec_operand(ctx_, scratch, piece_, red.args[0], i, m, n_ops);
                const float * y = red.kind == MERGE_REDUCTION_DOT ? exec_operand(ctx_, scratch, piece_, red.args[1], i, m, n_ops + 1) : x;
                double * sums = column_sums_[r].data();
                const uint64_t columns = red.columns;
                uint64_t c = i % columns;
                for (size_t e = 0; e < m; e++) {
                    sums[c] += (double) x[e] * (double) y[e];
                    if (++c == columns) c = 0;
                }
                continue;
            }
            if (red.kind != MERGE_REDUCTION_KTH_MAGNITUDE && red.columns > 0) continue; // the column pass
            if (red.kind != MERGE_REDUCTION_KTH_MAGNITUDE && kind != pass_main) continue; // sums: the main pass only
            const size_t q = kth_index_[r];
            if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE && (q == none || !serves(q))) continue; // k = 0, or another path's
            if (red.kind != MERGE_REDUCTION_KTH_MAGNITUDE) {
                // Member g's operands: slots n_ops + 2g and n_ops + 2g + 1 (when widened).
                const size_t g = n_sum;
                const float * x = sum_operand(red.args[0], n_ops + 2 * g);
                sum_args[2 * g] = &red.args[0];
                sum_values[2 * g] = x;
                const merge_operand & b = red.kind == MERGE_REDUCTION_DOT ? red.args[1] : red.args[0];
                const float * y = red.kind == MERGE_REDUCTION_DOT ? sum_operand(b, n_ops + 2 * g + 1) : x;
                sum_args[2 * g + 1] = &b;
                sum_values[2 * g + 1] = y;
                sum_x[g] = x;
                sum_y[g] = y;
                sum_lanes[g] = lanes[r];
                if (++n_sum == sum_group) flush_sums();
                continue;
            }
            flush_sums(); // the k-th's operand takes slot n_ops
            const float * x = exec_operand(ctx_, scratch, piece_, red.args[0], i, m, n_ops);
            switch (red.kind) {
                default: {
                    if (mode_[q] == kth_direct) {
                        uint32_t * keys = keys_of(q) + i;
                        for (size_t e = 0; e < m; e++) keys[e] = key_of(x[e]);
                        break;
                    }
                    if (mode_[q] == kth_bracketed) {
                        const kth_bracket & br = bracket_[q];
                        const size_t got = scan_(x, m, br.lo, br.hi, &counts_[(size_t) ith * n_kth_ + q], inside);
                        if (got == 0) break;
                        // Order in the buffer is irrelevant to the select; past the capacity only the count matters.
                        const uint64_t at = inside_count_[q].fetch_add(got, std::memory_order_relaxed);
                        if (at + got <= br.capacity) std::memcpy(inside_[q] + at, inside, got * sizeof(uint32_t));
                        break;
                    }
                    uint32_t * h = hist_[ith][q].data();
                    if (high) {
                        // Keys of the cached prefix are kept for the low pass (blocks lie wholly inside or outside it).
                        if (i < cache_len_) {
                            uint32_t * keys = keys_of(q) + i;
                            for (size_t e = 0; e < m; e++) {
                                const uint32_t key = key_of(x[e]);
                                keys[e] = key;
                                h[key >> 16]++;
                            }
                        } else {
                            for (size_t e = 0; e < m; e++) h[key_of(x[e]) >> 16]++;
                        }
                    } else {
                        const uint32_t want = bucket_[q];
                        for (size_t e = 0; e < m; e++) {
                            const uint32_t key = key_of(x[e]);
                            if ((key >> 16) == want) h[key & 0xffffu]++;
                        }
                    }
                    break;
                }
            }
        }
        flush_sums();
    }
    if (kind != pass_main) return;
    for (size_t r = 0; r < n_red; r++) {
        if (sum_index_[r] == none) continue;
        const double * l = lanes[r];
        partials_[sum_index_[r]][b % MERGE_REDUCTION_CHUNK_BLOCKS] = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    }
}

void piece_reducer::end_chunk(int pass, uint64_t first, uint64_t count) {
    if (kinds_[pass] != pass_main) return;
    for (size_t s = 0; s < partials_.size(); s++)
        for (uint64_t b = first; b < first + count; b++) totals_[s] += partials_[s][b % MERGE_REDUCTION_CHUNK_BLOCKS];
}

void piece_reducer::end_pass(int pass_index) {
    const merge_piece & p = ctx_.job->pieces[piece_];
    const pass_kind kind = kinds_[pass_index];
    if (kind == pass_columns) return;
    if (kind == pass_sample) {
        for (size_t q = 0; q < n_kth_; q++) {
            const uint64_t cap = bracket_[q].capacity;
            bracket_[q] = kth_bracket_from_sample(sample_[q], sample_plan_.size, p.n, p.reductions[kth_reduction_[q]].k);
            bracket_[q].capacity = std::min(bracket_[q].capacity, cap);
        }
        return;
    }
    if (kind == pass_main)
        for (size_t r = 0; r < p.reductions.size(); r++)
            if (sum_index_[r] != none) results_[r] = totals_[sum_index_[r]];
    bool missed = false;
    for (size_t q = 0; q < n_kth_; q++) {
        const size_t r = kth_reduction_[q];
        const uint64_t k = p.reductions[r].k;
        if (kind == pass_main && mode_[q] == kth_direct) {
            results_[r] = (double) kth_select_kept_keys(keys_of(q), cache_len_, k);
            mode_[q] = kth_done;
            continue;
        }
        if (kind == pass_main && mode_[q] == kth_bracketed) {
            kth_bracket_counts totals;
            for (unsigned t = 0; t < threads_; t++) {
                const kth_bracket_counts & c = counts_[(size_t) t * n_kth_ + q];
                totals.above += c.above;
                totals.at_hi += c.at_hi;
                totals.at_lo += c.at_lo;
            }
            const uint64_t found = inside_count_[q].load(std::memory_order_relaxed);
            uint32_t key;
            if (kth_bracket_resolve(bracket_[q], totals, inside_[q], found, k, &key)) {
                results_[r] = (double) key;
                mode_[q] = kth_done;
                bracket_hits_++;
            } else {
                mode_[q] = kth_radix;
                bracket_misses_++;
                missed = true;
            }
            continue;
        }
        if (mode_[q] != kth_radix) continue;
        const bool high = kind == pass_kth_high || kind == pass_main;
        if (kind == pass_main && !high) continue;
        std::vector<uint64_t> counts(bins, 0);
        for (auto & per_thread : hist_) {
            for (size_t b = 0; b < bins; b++) counts[b] += per_thread[q][b];
            std::fill(per_thread[q].begin(), per_thread[q].end(), 0u);
        }
        uint32_t bin;
        uint64_t rank;
        if (high) {
            select_bin(counts, k, &bin, &rank);
            bucket_[q] = bin;
            remaining_[q] = rank;
        } else {
            select_bin(counts, remaining_[q], &bin, &rank);
            results_[r] = (double) ((bucket_[q] << 16) | bin);
            mode_[q] = kth_done;
        }
    }
    if (missed) {
        // The exact radix path for the reductions whose bracket missed (rare: see kth_bracket.h).
        start_radix();
        kinds_.push_back(pass_kth_high);
        kinds_.push_back(pass_kth_low);
    }
}

std::vector<merge_reduction_result> piece_reducer::results() const {
    std::vector<merge_reduction_result> out(results_.size());
    for (size_t r = 0; r < results_.size(); r++) {
        out[r].columns = column_sums_[r];
        out[r].value = out[r].columns.empty() ? results_[r] : out[r].columns[0];
    }
    return out;
}
