// The engine's per-piece reductions (engine_internal.h, reductions.h): the pool computes a
// piece's statistics when the first window that writes it starts.
#include <algorithm>
#include <cstdlib>

#include "engine_internal.h"

/** The reductions' test and benchmark knobs (TENSORMERGE_REDUCTION_CACHE_KIB, _KTH_*, _REDUCE_GROUP_KIB). */
void engine::set_reduction_options() {
    // The k-th magnitude key cache (reductions.h); a test and benchmark knob outside the job contract.
    if (const char * v = std::getenv("TENSORMERGE_REDUCTION_CACHE_KIB")) {
        const long kib = std::atol(v);
        if (kib >= 0 && kib <= (4l << 20)) reduction_options_.cache_bytes = (uint64_t) kib << 10;
    }
    // The k-th magnitude's sampled bracket (kth_bracket.h): 0 turns it off (the radix path
    // only); TENSORMERGE_KTH_BRACKET_KEYS caps each reduction's buffer (a tiny one forces the fallback).
    if (const char * v = std::getenv("TENSORMERGE_KTH_BRACKET")) reduction_options_.bracket = std::atol(v) != 0;
    // TENSORMERGE_KTH_FUSED=0: the bracket pass of TIES's task vectors through scratch slots
    // (exec_run_ops, then the scan), not straight from the F16 / BF16 inputs; the same bits either way.
    if (const char * v = std::getenv("TENSORMERGE_KTH_FUSED")) reduction_options_.fused = std::atol(v) != 0;
    if (const char * v = std::getenv("TENSORMERGE_KTH_BRACKET_KEYS")) {
        const long keys = std::atol(v);
        if (keys > 0 && keys <= (1l << 30)) reduction_options_.bracket_keys = (uint64_t) keys;
    }
    // The input bytes of a group of pieces reduced then written (compute()): half the L3 of
    // the machine this was measured on (bench/RESULTS.md); 0 reduces a whole window first.
    if (const char * v = std::getenv("TENSORMERGE_REDUCE_GROUP_KIB")) {
        const long kib = std::atol(v);
        if (kib >= 0 && kib <= (4l << 20)) reuse_bytes_ = (uint64_t) kib << 10;
    }
    reduction_options_.descending = reuse_bytes_ > 0; // the same knob: 0 is the order before either
}

/**
 * Computes the reductions of piece p with every pool thread (reductions.h), when the first
 * window that writes any of its elements starts. Its input pages are not released in between:
 * the window release only unmaps the pages of elements already written, so the piece's later
 * windows read from the page cache what this pass faulted in (inputs read from disk once).
 */
merge_status engine::reduce_piece(merge_thread_pool & pool, size_t p) {
    if (!key_store_) key_store_.reset(new reduction_key_store(reduction_options_.cache_bytes));
    if (!small_store_) small_store_.reset(new reduction_key_store(0));
    piece_reducer reducer(ctx_, p, pool.size(), piece_reduction_options(p), *key_store_, *small_store_);
    const uint64_t n_blocks = reducer.n_blocks();
    const uint64_t n_chunks = (n_blocks + MERGE_REDUCTION_CHUNK_BLOCKS - 1) / MERGE_REDUCTION_CHUNK_BLOCKS;
    const bool down = reducer.descending();
    for (int pass = 0; pass < reducer.passes(); pass++) {
        for (uint64_t ci = 0; ci < n_chunks; ci++) {
            const uint64_t c0 = (down ? n_chunks - 1 - ci : ci) * MERGE_REDUCTION_CHUNK_BLOCKS;
            const uint64_t count = std::min<uint64_t>(MERGE_REDUCTION_CHUNK_BLOCKS, n_blocks - c0);
            // Items of reduction_group consecutive blocks: a thread's block is then mostly
            // followed by the next one, whose inputs the reducer prefetches (results do not
            // depend on which thread computes a block).
            constexpr uint64_t reduction_group = 8;
            merge_status s = run_items(pool, (count + reduction_group - 1) / reduction_group, reducer.active_threads(pass), [&](unsigned ith, uint64_t g) {
                for (uint64_t b = g * reduction_group; b < std::min(count, (g + 1) * reduction_group); b++)
                    reducer.run_block(*scratch_[ith], ith, pass, down ? c0 + count - 1 - b : c0 + b);
            });
            if (!s.ok()) return s;
            reducer.end_chunk(pass, c0, count);
        }
        reducer.end_pass(pass);
    }
    if (reducer.selects()) {
        reduction_cached_ += reducer.cached_elements();
        reduction_elements_ += job_.pieces[p].n;
        bracket_hits_ += reducer.bracket_hits();
        bracket_misses_ += reducer.bracket_misses();
        if (reducer.fused()) fused_elements_ += job_.pieces[p].n;
    }
    piece_stats_[p] = reducer.results();
    return {};
}

/**
 * The reduction options for piece p: the descending block order (reduce groups on) only for
 * a piece whose inputs fit the group budget, whose output pass then reads them from the CPU
 * caches; a bigger piece is reduced forwards, so its statistics pass never reads a big cold
 * tensor backwards against the kernel's read-ahead (that cost 2 x 7B TIES 195 CPU-s against
 * 41; bench/RESULTS.md "Night check"). Results do not depend on the order (reductions.h).
 */
reduction_options engine::piece_reduction_options(size_t p) const {
    reduction_options options = reduction_options_;
    if (options.descending && piece_input_bytes(p) > reuse_bytes_) options.descending = false;
    return options;
}

/** Input bytes piece p's writes read (its distinct input streams over all its elements). */
uint64_t engine::piece_input_bytes(size_t p) const {
    uint64_t bytes = 0;
    for (const plan_write & pw : plan_.writes[p])
        for (const plan_input_ref & r : pw.inputs) bytes += job_.pieces[p].n * r.elem_size;
    return bytes;
}
