// Per-piece statistics (lib/native/job.ts, "Per-piece statistics"): sums of squares, dot
// products and exact k-th largest magnitudes, computed over the whole piece before any of its
// elements is written, with results that do not depend on threads, windows or engine.
//
// Sums: blocks of MERGE_REDUCTION_BLOCK elements from the piece's element 0; in a block,
// MERGE_REDUCTION_LANES double lanes (element i adds to lane i mod lanes, in index order),
// folded as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); block values added in index order from 0.0.
// Threads compute blocks in chunks of MERGE_REDUCTION_CHUNK_BLOCKS; after each chunk one thread
// folds the chunk's block values in order, so the order of additions is fixed.
//
// k-th magnitude: keys = fp32 bits with the sign cleared (order as |x|; NaNs above +∞); k = 0
// gives 2^31, a key no element reaches. Three exact paths, chosen per piece:
//   - small pieces (at most MERGE_DIRECT_SELECT elements): every key kept (each thread writes
//     its blocks' keys at their indices), then a radix select on them (digits of 11 bits at
//     most, each narrowing the candidates in place), after one pass;
//   - larger pieces: the sampled bracket (kth_bracket.h): a pass over a fixed 1/64 sample picks
//     keys lo ≤ hi around the k-th, the main pass counts the keys above hi, at hi and at lo and
//     keeps those strictly inside in a bounded buffer, and the k-th is selected there. Counts
//     are integers (exact in any order), the sample is a function of n alone;
//   - the radix path, when a bracket misses (or TENSORMERGE_KTH_BRACKET=0): pass 1 counts the
//     keys' high 16 bits, the bucket holding the k-th largest is chosen (from the top); pass 2
//     counts the low 16 bits of the keys in that bucket. The keys of a prefix of the piece
//     (cached_elements(): the whole piece when it fits the cache budget, a multiple of
//     MERGE_REDUCTION_BLOCK otherwise) are kept by pass 1, so pass 2 reads them instead of
//     evaluating the operands again.
// Each path gives the same key: the k-th largest.
//
// Per-column sums (`columns` > 0: element i adds to column i mod columns, as torch's reductions
// over dim 0 of a [rows, columns…] tensor): one pass by a single thread in element order, each
// column a plain double sum in row order; the result is a vector of `columns` doubles.
//
// Private memory, bounded whatever the model: per reducer, MERGE_REDUCTION_CHUNK_BLOCKS doubles
// per sum reduction (2 KiB each, at most MERGE_MAX_REDUCTIONS); per-column reductions hold their
// result (columns doubles: n / rows, at most MERGE_MAX_COLUMNS); the run's small store, as large
// as its largest piece needed: a small piece's keys (1 MiB per k-th reduction, at most
// MERGE_MAX_ARGS − 1 of them: 15 MiB), or a bracket's sample (at most KTH_MAX_SAMPLE keys, 1 MiB,
// per k-th reduction) and buffers (KTH_BRACKET_BUDGET_BYTES = 16 MiB for all of a piece's); only
// when the radix path runs, per histogram thread one 65536-entry u32 histogram (256 KiB) per
// k-th reduction, histogram threads capped so that they hold at most 64 MiB in all, and the key
// cache (the engine's budget, MERGE_REDUCTION_CACHE_BYTES = 96 MiB by default), allocated the
// first time a bracket misses.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "exec.h"
#include "kth_bracket.h"
#include "reduction_lanes.h"

enum merge_reduction_kind : uint32_t {
    MERGE_REDUCTION_SUM_SQUARES = 0,
    MERGE_REDUCTION_DOT = 1,
    MERGE_REDUCTION_KTH_MAGNITUDE = 2,
    MERGE_REDUCTION_COUNT = 3,
};

constexpr uint64_t MERGE_REDUCTION_BLOCK = 4096;
constexpr uint32_t MERGE_REDUCTION_LANES = 8;
constexpr uint64_t MERGE_REDUCTION_CHUNK_BLOCKS = 256;
constexpr double MERGE_KEEP_NONE_KEY = 2147483648.0;
constexpr uint64_t MERGE_MAX_COLUMNS = 1u << 20;
constexpr uint64_t MERGE_DIRECT_SELECT = 1u << 18;
/** Default key cache budget per piece (engine.cc: TENSORMERGE_REDUCTION_CACHE_KIB overrides it). */
constexpr uint64_t MERGE_REDUCTION_CACHE_BYTES = 96ull << 20;

/** One reduction's result: `value` (a per-column reduction: its first column), and `columns`. */
struct merge_reduction_result {
    double value = 0;
    std::vector<double> columns;
};

inline uint32_t merge_reduction_arity(uint32_t kind) { return kind == MERGE_REDUCTION_DOT ? 2 : (kind < MERGE_REDUCTION_COUNT ? 1 : 0); }
inline const char * merge_reduction_name(uint32_t kind) {
    static const char * names[MERGE_REDUCTION_COUNT] = {"sum-squares", "dot", "kth-magnitude"};
    return kind < MERGE_REDUCTION_COUNT ? names[kind] : "?";
}

/**
 * Storage for the k-th magnitude keys, shared by the pieces of one run (the engine owns it): one
 * allocation of the budget, reused by every piece, so a piece's keys cost no fresh pages (page
 * faults and zeroing of up to the budget per tensor would cost more than the pass they save).
 */
class reduction_key_store {
public:
    explicit reduction_key_store(uint64_t budget_bytes) : budget_(budget_bytes / sizeof(uint32_t)) {}
    /** At least n keys (uninitialised). Throws std::bad_alloc. */
    uint32_t * get(uint64_t n) {
        if (n > capacity_) {
            const uint64_t size = n > budget_ ? n : budget_;
            data_.reset(new uint32_t[(size_t) size]);
            capacity_ = size;
        }
        return data_.get();
    }

private:
    uint64_t budget_;
    uint64_t capacity_ = 0;
    std::unique_ptr<uint32_t[]> data_;
};

/** How a piece selects its k-th magnitudes (the engine's knobs). */
struct reduction_options {
    uint64_t cache_bytes = MERGE_REDUCTION_CACHE_BYTES; // the key cache budget of the radix path
    bool bracket = true;                                // the sampled bracket first (kth_bracket.h)
    uint64_t bracket_keys = 0;                          // buffer keys per reduction; 0: KTH_BRACKET_BUDGET_BYTES shared
    bool descending = true;                             // blocks from the last to the first where results allow (descending())
    bool fused = true;                                  // the fused bracket pass where it applies (kth_bracket_scan_half_sum_for)
};

/** Computes one piece's reductions; the engine drives it (threads, fault guard, chunks). */
class piece_reducer {
public:
    /**
     * Throws std::bad_alloc. `threads`: the pool's size; `store`: the radix path's key cache
     * (touched only when that path runs); `small_store`: the keys of small pieces and the
     * bracket's sample and buffer.
     */
    piece_reducer(const exec_context & ctx, size_t piece, unsigned threads, const reduction_options & options, reduction_key_store & store,
                  reduction_key_store & small_store);

    /**
     * Passes in order: the bracket's sample (if any), the main pass (sums; k-th: keys of small
     * pieces, the bracket's counts, or the radix path's high histograms), the radix path's
     * passes (from the start without the bracket; appended by end_pass when a bracket misses),
     * then the per-column pass if any. The count can grow after end_pass.
     */
    int passes() const { return (int) kinds_.size(); }
    uint64_t n_blocks() const { return n_blocks_; }
    /** Threads that may take part in a pass (index < this): all, fewer when histograms are big, one for columns. */
    unsigned active_threads(int pass) const;
    /** Computes block b for `pass` on thread `ith` (< active_threads()). Reads inputs: fault-guard it. */
    void run_block(exec_scratch & scratch, unsigned ith, int pass, uint64_t b);
    /** One thread, after the chunk's blocks [first, first + count) are all computed. */
    void end_chunk(int pass, uint64_t first, uint64_t count);
    /** One thread, after every block of the pass. Throws std::bad_alloc (a bracket's fallback). */
    void end_pass(int pass);
    std::vector<merge_reduction_result> results() const;
    /** Elements whose k-th magnitude keys were kept whole (small pieces) or in the radix path's cache. */
    uint64_t cached_elements() const { return cache_len_; }
    /** k-th magnitude reductions resolved by their bracket, and those that fell back to the radix path. */
    uint64_t bracket_hits() const { return bracket_hits_; }
    uint64_t bracket_misses() const { return bracket_misses_; }
    /**
     * Whether the engine runs the blocks of each pass from the last to the first: the piece's
     * results do not depend on the order (no sums: the k-th magnitude's counts, keys and
     * histograms are order-free), and the output pass, which starts at element 0, then finds
     * the inputs of the piece's first elements still in the CPU caches.
     */
    bool descending() const { return descending_; }
    /** Whether the main pass scans its task vectors straight from the F16 or BF16 inputs (kth_bracket_scan_half_sum_fn). */
    bool fused() const { return scan_half_sum_ != nullptr; }
    /** Whether the piece has a k-th magnitude to select (k > 0). */
    bool selects() const { return n_kth_ > 0; }

private:
    enum pass_kind { pass_sample, pass_main, pass_kth_high, pass_kth_low, pass_columns };
    enum kth_mode { kth_direct, kth_bracketed, kth_radix, kth_done };
    std::vector<pass_kind> kinds_;
    std::vector<std::vector<double>> column_sums_; // per reduction (empty unless per column)
    bool direct_ = false;                          // small piece: keys kept, selected by a radix select on them
    uint64_t cache_len_ = 0;                       // elements [0, cache_len_) have their keys in keys_
    uint32_t * keys_ = nullptr;                    // [kth reduction][element < cache_len_]
    size_t n_kth_ = 0;
    size_t n_radix_ = 0;                           // k-th reductions on the radix path
    uint32_t * keys_of(size_t q) const { return keys_ + q * cache_len_; }
    const exec_context & ctx_;
    size_t piece_;
    unsigned threads_ = 1;
    reduction_options options_;
    reduction_key_store & store_;
    uint64_t n_blocks_ = 0;
    unsigned hist_active_ = 1;                     // threads of the histogram passes
    std::vector<uint32_t> ops_;                    // ops the reductions need, ascending
    std::vector<size_t> sum_index_;                // per reduction: its row in partials_ (sums), or SIZE_MAX
    std::vector<size_t> kth_index_;                // per reduction: its k-th index q, or SIZE_MAX
    std::vector<size_t> kth_reduction_;            // per q: its reduction
    std::vector<kth_mode> mode_;                   // per q
    std::vector<std::vector<double>> partials_;    // [sum reduction][block in chunk]
    std::vector<std::vector<std::vector<uint32_t>>> hist_; // [thread][kth reduction][bin] (radix path)
    std::vector<uint32_t> bucket_;                 // per kth reduction: the chosen high 16 bits
    std::vector<uint64_t> remaining_;              // per kth reduction: rank left inside the bucket
    // The bracket (kth_bracket.h), per q: sample keys, bracket, buffer, per-thread counts.
    kth_sample_plan sample_plan_;
    std::vector<uint32_t *> sample_, inside_;
    std::vector<kth_bracket> bracket_;
    std::unique_ptr<std::atomic<uint64_t>[]> inside_count_;
    std::vector<kth_bracket_counts> counts_;       // [thread · n_kth + q]
    kth_bracket_scan_fn scan_ = nullptr;
    kth_bracket_scan_half_sum_fn scan_half_sum_ = nullptr; // the fused main pass, when every k-th's operand allows it
    bool descending_ = false;
    reduction_lanes_fn lanes_ = nullptr;          // the sums' lane kernel (reduction_lanes.h) for the job's ISA
    uint64_t bracket_hits_ = 0, bracket_misses_ = 0;
    std::vector<double> totals_;                   // per sum reduction
    std::vector<double> results_;

    void start_radix();                            // hist_ and the key cache for the radix path
    // The inputs the reductions' ops read (element 0's byte, element size): prefetched one step ahead.
    struct input_stream {
        const uint8_t * data;
        uint32_t elem_size;
    };
    std::vector<input_stream> streams_;
    void prefetch(uint64_t i, uint64_t m) const;
};
