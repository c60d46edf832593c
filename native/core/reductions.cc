#include "reductions.h"

#include <algorithm>
#include <cstring>

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

/**
 * The k-th largest of keys[0, n) (1 <= k <= n), exactly: a radix select over digits of 11, 10
 * and 10 bits from the top (keys are below 2^31). Each digit's histogram picks the bin holding
 * the k-th largest; the keys of that bin are moved to the front (in place: the write index never
 * passes the read index) and the next digit ranks only them. Overwrites keys.
 */
uint32_t select_kept_keys(uint32_t * keys, uint64_t n, uint64_t k) {
    static const int shifts[3] = {20, 10, 0};
    static const uint32_t widths[3] = {2048, 1024, 1024};
    uint32_t prefix = 0;
    uint64_t count = n;
    for (int d = 0; d < 3; d++) {
        const int shift = shifts[d];
        const uint32_t mask = widths[d] - 1;
        uint64_t hist[2048] = {};
        for (uint64_t e = 0; e < count; e++) hist[(keys[e] >> shift) & mask]++;
        uint64_t above = 0;
        uint32_t bin = 0;
        for (uint32_t b = widths[d]; b-- > 0;) {
            if (above + hist[b] >= k) {
                bin = b;
                break;
            }
            above += hist[b];
        }
        k -= above;
        prefix |= bin << shift;
        if (d == 2) break;
        uint64_t w = 0;
        for (uint64_t e = 0; e < count; e++)
            if (((keys[e] >> shift) & mask) == bin) keys[w++] = keys[e];
        count = w;
    }
    return prefix;
}

/** Lane sums of x·y on elements [i, i + m) (i a multiple of the lane count): lane l takes elements ≡ l, in order. */
inline void add_products(double * lanes, const float * x, const float * y, size_t m) {
    size_t e = 0;
    // Eight independent lanes per step: the compiler vectorises this over the lanes, each lane's
    // additions still in element order, so the sums are those of the element-by-element loop.
    for (; e + MERGE_REDUCTION_LANES <= m; e += MERGE_REDUCTION_LANES)
        for (uint32_t l = 0; l < MERGE_REDUCTION_LANES; l++) lanes[l] += (double) x[e + l] * (double) y[e + l];
    for (; e < m; e++) lanes[e % MERGE_REDUCTION_LANES] += (double) x[e] * (double) y[e];
}

} // namespace

piece_reducer::piece_reducer(const exec_context & ctx, size_t piece, unsigned threads, uint64_t cache_bytes, reduction_key_store & store) : ctx_(ctx), piece_(piece) {
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
            else kth_index_[r] = n_kth++;
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
    direct_ = p.n <= MERGE_DIRECT_SELECT;
    has_kth_pass_ = n_kth > 0 && !direct_;
    column_sums_.resize(p.reductions.size());
    bool any_columns = false;
    for (size_t r = 0; r < p.reductions.size(); r++)
        if (p.reductions[r].kind != MERGE_REDUCTION_KTH_MAGNITUDE && p.reductions[r].columns > 0) {
            column_sums_[r].assign((size_t) p.reductions[r].columns, 0.0);
            any_columns = true;
        }
    kinds_.push_back(pass_main);
    if (has_kth_pass_) kinds_.push_back(pass_kth_low);
    if (any_columns) kinds_.push_back(pass_columns);
    active_ = threads;
    if (n_kth > 0 && direct_) {
        cache_len_ = p.n;
        keys_ = store.get(n_kth * cache_len_);
    } else if (n_kth > 0) {
        const uint64_t fit = cache_bytes / (n_kth * sizeof(uint32_t));
        cache_len_ = fit >= p.n ? p.n : fit / MERGE_REDUCTION_BLOCK * MERGE_REDUCTION_BLOCK;
        if (cache_len_ > 0) keys_ = store.get(n_kth * cache_len_);
        const uint64_t per_thread = n_kth * bins * sizeof(uint32_t);
        active_ = (unsigned) std::max<uint64_t>(1, std::min<uint64_t>(threads, histogram_budget / per_thread));
        hist_.assign(active_, std::vector<std::vector<uint32_t>>(n_kth, std::vector<uint32_t>(bins, 0)));
        bucket_.assign(n_kth, 0);
        remaining_.assign(n_kth, 0);
    }
    partials_.assign(n_sums, std::vector<double>(MERGE_REDUCTION_CHUNK_BLOCKS, 0.0));
    totals_.assign(n_sums, 0.0);
}

void piece_reducer::run_block(exec_scratch & scratch, unsigned ith, int pass_index, uint64_t b) {
    const merge_piece & p = ctx_.job->pieces[piece_];
    const pass_kind kind = kinds_[pass_index];
    const int pass = kind == pass_main ? 0 : 1;
    const uint64_t b0 = b * MERGE_REDUCTION_BLOCK, b1 = std::min<uint64_t>(p.n, b0 + MERGE_REDUCTION_BLOCK);
    const size_t n_ops = p.ops.size();
    double lanes[MERGE_MAX_REDUCTIONS][MERGE_REDUCTION_LANES];
    const size_t n_red = p.reductions.size();
    if (pass == 0)
        for (size_t r = 0; r < n_red; r++) std::fill(lanes[r], lanes[r] + MERGE_REDUCTION_LANES, 0.0);
    if (kind == pass_kth_low && b1 <= cache_len_) {
        // Every key of this block was kept by pass 1: no operand is evaluated again.
        for (size_t r = 0; r < n_red; r++) {
            const size_t q = kth_index_[r];
            if (q == none) continue;
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
    for (uint64_t i = b0; i < b1; i += step) {
        const size_t m = (size_t) std::min<uint64_t>(step, b1 - i);
        exec_run_ops(ctx_, scratch, piece_, ops_, i, m);
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
            if (pass == 1 && kth_index_[r] == none) continue;
            if (red.kind == MERGE_REDUCTION_KTH_MAGNITUDE && kth_index_[r] == none) continue; // k = 0
            const float * x = exec_operand(ctx_, scratch, piece_, red.args[0], i, m, n_ops);
            switch (red.kind) {
                case MERGE_REDUCTION_SUM_SQUARES: add_products(lanes[r], x, x, m); break;
                case MERGE_REDUCTION_DOT: add_products(lanes[r], x, exec_operand(ctx_, scratch, piece_, red.args[1], i, m, n_ops + 1), m); break;
                default: {
                    const size_t q = kth_index_[r];
                    if (direct_) {
                        uint32_t * keys = keys_of(q) + i;
                        for (size_t e = 0; e < m; e++) keys[e] = key_of(x[e]);
                        break;
                    }
                    uint32_t * h = hist_[ith][q].data();
                    if (pass == 0) {
                        // Keys of the cached prefix are kept for pass 2 (blocks lie wholly inside or outside it).
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
    }
    if (pass != 0) return;
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
    if (kinds_[pass_index] == pass_columns) return;
    const int pass = kinds_[pass_index] == pass_main ? 0 : 1;
    for (size_t r = 0; r < p.reductions.size(); r++) {
        if (pass == 0 && sum_index_[r] != none) results_[r] = totals_[sum_index_[r]];
        const size_t q = kth_index_[r];
        if (q == none) continue;
        if (direct_) {
            results_[r] = (double) select_kept_keys(keys_of(q), cache_len_, p.reductions[r].k);
            continue;
        }
        std::vector<uint64_t> counts(bins, 0);
        for (auto & per_thread : hist_) {
            for (size_t b = 0; b < bins; b++) counts[b] += per_thread[q][b];
            std::fill(per_thread[q].begin(), per_thread[q].end(), 0u);
        }
        uint32_t bin;
        uint64_t rank;
        if (pass == 0) {
            select_bin(counts, p.reductions[r].k, &bin, &rank);
            bucket_[q] = bin;
            remaining_[q] = rank;
        } else {
            select_bin(counts, remaining_[q], &bin, &rank);
            results_[r] = (double) ((bucket_[q] << 16) | bin);
        }
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
