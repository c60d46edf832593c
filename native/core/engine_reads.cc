// The read side of the engine (engine_internal.h): a window's input runs, the reader that
// reads them into buffers, the read-ahead through the maps, and what happens to the input
// pages once the window is computed (unmapped; dropped from the page cache: drop-behind).
#include <algorithm>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu.h"
#include "engine_internal.h"
#include "residency.h"

/** Whether window_inputs lists piece p under `which`. */
bool engine::lists(size_t p, runs_of which) const {
    if (which == runs_of::all) return true;
    const uint8_t queued = statistics_queued_.empty() || !statistics_ahead_ ? 0 : statistics_queued_[p];
    return which == runs_of::not_read_ahead ? !(statistics_ahead_ && !job_.pieces[p].reductions.empty()) : queued == 2;
}

/** The input byte ranges read by the elements that start in [w0, w1) of output o. */
std::vector<prefetch_range> engine::window_inputs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which) {
    std::vector<prefetch_range> ranges;
    const std::vector<plan_span> & spans = plan_.spans[o];
    for (size_t i = first; i < spans.size() && spans[i].begin < w1; i++) {
        const plan_span & sp = spans[i];
        if (sp.piece == plan_literal || sp.end <= w0 || !lists(sp.piece, which)) continue;
        uint64_t i0, i1;
        plan_elements_starting_in(sp.begin, plan_.writes[sp.piece][sp.index].out_size, job_.pieces[sp.piece].n, w0, w1, &i0, &i1);
        exec_collect_inputs(ctx_, sp.piece, sp.index, i0, i1, &ranges);
    }
    return ranges;
}

/**
 * Drop-behind: whether consumed input pages that were not in the page cache before the
 * merge asked for them leave it again (see plan_window_reads / drop_window). release_inputs: 3
 * always, 1 (the default) when no input byte is read twice (inputs_read_once: one output, or
 * the disjoint shards of one model) and
 * its inputs are more than half the RAM (so they could not stay cached anyway: growing the
 * cache only evicts everything else, and on VMs whose free memory goes back to the host
 * each fresh page-cache page costs a host fault, 3-4x the CPU of the merge itself in cold
 * runs). Pages that were already cached stay cached, whatever the size.
 */
bool engine::wants_drop_behind() const {
    const int release = job_.tuning.release_inputs;
    if (release == 3) return true;
    if (release != 1 || !read_once_) return false;
    uint64_t total = 0;
    for (const merge_input & in : job_.inputs) total += in.size;
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return false;
    return total / 2 > (uint64_t) pages / 4 * (uint64_t) page_size; // total > RAM / 2, without overflow
}

/**
 * True when no two writes read the same input byte: a merge into one file, or into the
 * shards of one model. A sweep's outputs read the same pieces, and a frankenmerge reads one
 * layer into two: both are false, since a page dropped after its first use would be read
 * from the disk again.
 */
bool engine::inputs_read_once() const {
    const auto by_position = [](const prefetch_range & x, const prefetch_range & y) {
        return x.file != y.file ? x.file < y.file : x.offset < y.offset;
    };
    std::vector<prefetch_range> all;
    for (size_t o = 0; o < job_.outputs.size(); o++)
        for (const plan_span & sp : plan_.spans[o]) {
            if (sp.piece == plan_literal) continue;
            // One write may read an input twice (two ops on A): coalesce within it first.
            std::vector<prefetch_range> own; // (plan_ only: this runs before ctx_ is set)
            for (const plan_input_ref & r : plan_.writes[sp.piece][sp.index].inputs) own.push_back({r.file, r.offset, job_.pieces[sp.piece].n * r.elem_size});
            std::sort(own.begin(), own.end(), by_position);
            for (const prefetch_range & r : own) {
                if (!all.empty() && &r != &own.front()) {
                    prefetch_range & last = all.back();
                    if (last.file == r.file && r.offset <= last.offset + last.length) {
                        last.length = std::max(last.offset + last.length, r.offset + r.length) - last.offset;
                        continue;
                    }
                }
                all.push_back(r);
            }
        }
    std::sort(all.begin(), all.end(), by_position);
    for (size_t i = 1; i < all.size(); i++)
        if (all[i].file == all[i - 1].file && all[i].offset < all[i - 1].offset + all[i - 1].length) return false;
    return true;
}

/** `ranges` sorted by (file, offset), empty ones dropped, overlapping or touching ones merged. */
std::vector<prefetch_range> engine::sorted_coalesced(std::vector<prefetch_range> ranges) {
    std::sort(ranges.begin(), ranges.end(), [](const prefetch_range & x, const prefetch_range & y) {
        return x.file != y.file ? x.file < y.file : x.offset < y.offset;
    });
    size_t n = 0;
    for (const prefetch_range & r : ranges) {
        if (r.length == 0) continue;
        if (n > 0 && ranges[n - 1].file == r.file && r.offset <= ranges[n - 1].offset + ranges[n - 1].length) {
            prefetch_range & last = ranges[n - 1];
            last.length = std::max(last.offset + last.length, r.offset + r.length) - last.offset;
        } else {
            ranges[n++] = r;
        }
    }
    ranges.resize(n);
    return ranges;
}

/** The window's input ranges, sorted and coalesced per file (one syscall per contiguous run). */
std::vector<prefetch_range> engine::window_runs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which) {
    std::vector<prefetch_range> ranges = window_inputs(o, w0, w1, first, which);
    return sorted_coalesced(std::move(ranges));
}

/** Whether uncached input runs skip the page cache (merge_input_cache, job.h). */
bool engine::bypass_cache() const {
    const merge_input_cache c = job_.input_cache;
    return c == MERGE_INPUT_CACHE_BYPASS || (c == MERGE_INPUT_CACHE_AUTO && merge_cpu_detect().hypervisor);
}

/**
 * Buffered reads (tuning.buffered_reads): 2 always; 1 (the default) when drop-behind applies
 * (inputs read once, inputs > RAM/2: wants_drop_behind) or the job bypasses the page cache
 * (bypass_cache), the reader has pieces to read (reader_has_work) and at least 5% of the input bytes are not
 * in the page cache when the job starts; 0 never. Cached runs are read through the map
 * either way (merge_input_reader skips them), so a warm job loses nothing. Without
 * drop-behind the pages read stay cached, each a fresh page either way, and the copy into
 * the slots cost more system CPU than mapping them in 2 of 3 A/B runs of ws-sd15h (two 2 GB
 * inputs; bench/RESULTS.md "Cold reads"), so those jobs keep the maps unless they bypass the
 * cache (then the reader's direct reads make no page-cache page at all).
 * The reader reads uncached runs with O_DIRECT (tuning.direct_reads, prefetch.h): the
 * kernel DMAs them into the slots, no page-cache page is made, copied or dropped; on the
 * benchmark VM that took system CPU from ~0.8 to ~0.17 s per 3.2 GB read (bench/RESULTS.md,
 * "Direct reads"). A direct read waits for the device, so tuning.readers (0: 4 with direct
 * reads, as the floor's O_DIRECT technique, else 2) is also the number of requests in flight.
 * With the statistics read on (statistics_read_mode), the reader leaves the pieces with
 * statistics to the map (their statistics pass brought them in), so each byte it reads is
 * read once by the whole job and direct reads stay on for the others.
 * With a reader, the window narrows so that one window's input runs fit in one read slot (a
 * window of output bytes reads about window x input bytes / output bytes, plus a page of
 * alignment per run): the reader's memory is 2 read slots, the engine's 2 windows.
 */
void engine::start_reader() {
    if (job_.tuning.buffered_reads == 1) {
        // Without drop-behind the maps keep what they read cached, unless the job bypasses the
        // cache; a job that reads some bytes twice (a sweep, a frankenmerge) keeps the maps, so
        // its second read finds them cached instead of going to the disk again.
        if (!drop_behind_ && !(bypass_cache() && read_once_)) return;
        if (!reader_has_work()) return;
        double total = 0, missing = 0; // a cheap estimate first: a warm job takes no page snapshot
        for (const auto & in : inputs_) {
            total += (double) in->size();
            missing += (1.0 - in->sampled_resident_fraction()) * (double) in->size();
        }
        if (total == 0 || missing < 0.05 * total) return;
    }
    for (const merge_input & in : job_.inputs) input_paths_.push_back(in.path);
    const uint64_t slot = job_.tuning.read_buffer_bytes;
    // A job with statistics reads each such tensor twice: its statistics pass through the map
    // (which leaves the pages cached), its output pass through the reader. A buffered read finds
    // those pages cached; a direct read goes to the disk again (2 x 7B SLERP: 46.5 s direct,
    // 25.6-31.7 s buffered; bench/RESULTS.md "Night check"). So the default (1) reads such
    // jobs buffered; 2 and 3 still force direct reads.
    bool statistics = false;
    for (const auto & piece : job_.pieces) statistics = statistics || !piece.reductions.empty();
    // With the statistics read on, the reader leaves those pieces to the map (queue_statistics_reads):
    // every byte it reads is then read once by the whole job, and direct reads apply again.
    const int direct = job_.tuning.direct_reads == 1 && statistics && statistics_read_ == 0 ? 0 : job_.tuning.direct_reads;
    readers_ = job_.tuning.readers > 0 ? (unsigned) job_.tuning.readers : direct != 0 ? 4u : 2u;
    std::unique_ptr<merge_input_reader> reader(
            new merge_input_reader(inputs_, input_paths_, slot, readers_, job_.tuning.buffered_reads == 2, drop_behind_, direct, job_.tuning.read_piece_bytes));
    if (job_.tuning.buffered_reads == 1 && reader->uncached_fraction() < 0.05) return;
    uint64_t in_total = 0, max_out = 0;
    for (const merge_input & in : job_.inputs) in_total += in.size;
    for (const merge_output & out : job_.outputs) max_out = std::max(max_out, out.size);
    if (in_total > max_out && max_out > 0) {
        const uint64_t room = slot > (job_.inputs.size() + 1) * page ? slot - (job_.inputs.size() + 1) * page : page;
        const uint64_t fit = (uint64_t) ((unsigned __int128) room * max_out / in_total) & ~(page - 1);
        window_ = std::min(window_, std::max<uint64_t>(fit, std::min<uint64_t>(window_, 4u << 20)));
    }
    reader->start();
    reader_ = std::move(reader);
}

/**
 * Whether the reader would read anything: with the statistics read on it leaves the pieces
 * with statistics to the map (queue_statistics_reads), so a job whose every piece that reads
 * an input has statistics (2 x 7B SLERP and TIES: every tensor) gives it nothing. Started
 * anyway, it cost a page-cache lookup of every input page (its mincore snapshot: 29 GB of
 * inputs looked up per output shard, ~3% of the CPU of a cold 2 x 7B SLERP, perf) and
 * narrowed the windows to fit its slots (16 instead of 32 MiB: twice the windows, each with
 * its syscalls), for no byte read (bench/RESULTS.md "2 x 7B: where the CPU goes").
 */
bool engine::reader_has_work() const {
    if (statistics_read_ == 0) return true;
    for (size_t p = 0; p < job_.pieces.size(); p++) {
        if (!job_.pieces[p].reductions.empty()) continue;
        for (const plan_write & pw : plan_.writes[p])
            if (!pw.inputs.empty()) return true;
    }
    return false;
}

/**
 * Window n_windows_ (output o's [w0, w1)) is about to be computed: queues the reads of the
 * window that will follow it (next_output on the cursors as they will be, so interleaved
 * outputs get theirs too) and waits for this one's, which the previous call queued.
 */
merge_status engine::read_window(const std::vector<output_cursor> & cursors, size_t o, uint64_t w0, uint64_t w1, size_t first) {
    const uint64_t id = n_windows_;
    if (id == 0) reader_->submit(0, window_runs(o, w0, w1, first, runs_of::not_read_ahead));
    std::vector<output_cursor> after = cursors;
    after[o].w0 = w1;
    const size_t next = next_output(after);
    std::vector<prefetch_range> runs;
    if (next != SIZE_MAX) {
        output_cursor & c = after[next];
        const std::vector<plan_span> & spans = plan_.spans[next];
        while (c.first < spans.size() && spans[c.first].end <= c.w0) c.first++;
        runs = window_runs(next, c.w0, window_end(next, c.w0, done_ + (w1 - w0)), c.first, runs_of::not_read_ahead);
    }
    reader_->submit(id + 1, runs);
    return reader_->wait(id, &staged_);
}

/** Drop-behind of the computed window's runs that were read from disk (see drop_window). */
void engine::drop_read_runs() {
    if (!staged_) return;
    for (const staged_run & r : staged_->runs) // a direct run left nothing in the page cache
        if (r.cold && !(r.direct && inputs_[r.file]->reads_direct())) inputs_[r.file]->drop_cached(r.offset, r.length);
}

/**
 * Before anything asks the kernel for a window's input runs: records for drop-behind which
 * runs are (mostly) not cached, and with a prefetcher queues the read-ahead of the runs
 * that are not wholly cached. tuning.sampled_residency (default 1) checks long runs on a
 * sample of their pages and skips the read-ahead of cached runs (residency.h: both were
 * page-by-page page-cache walks, a fifth of a warm merge's CPU); 0 checks every page and
 * reads ahead every run. With the statistics read on, the pieces with statistics are left
 * to it (MADV_WILLNEED read-ahead fills the page cache with 4 KiB folios, which its
 * MADV_POPULATE_READ would then map one by one) and to drop_statistics_runs.
 */
void engine::plan_window_reads(size_t o, uint64_t w0, uint64_t w1, size_t first, merge_prefetcher * prefetcher) {
    const bool sampled = job_.tuning.sampled_residency != 0;
    if (!drop_behind_ && !(prefetcher && sampled)) {
        if (prefetcher) prefetcher->submit(window_runs(o, w0, w1, first, runs_of::not_read_ahead));
        return;
    }
    window_drop d{w0, {}};
    std::vector<prefetch_range> ahead;
    for (const prefetch_range & r : window_runs(o, w0, w1, first, runs_of::not_read_ahead)) {
        const double resident = merge_run_residency(*inputs_[r.file], r.offset, r.length, sampled);
        if (drop_behind_ && resident < 0.5) d.cold.push_back(r);
        if (prefetcher && (!sampled || resident < 1.0)) ahead.push_back(r);
    }
    if (drop_behind_) pending_drops_.push_back(std::move(d));
    if (prefetcher && !ahead.empty()) prefetcher->submit(std::move(ahead));
}

/**
 * Unmaps the input pages of a computed window, one madvise per contiguous run: each
 * munmap of pages another thread may have touched is a TLB shootdown (an IPI per CPU).
 */
void engine::release_window(size_t o, uint64_t w0, uint64_t w1, size_t first) {
    for (const prefetch_range & r : window_runs(o, w0, w1, first)) inputs_[r.file]->advise(r.offset, r.length, MADV_DONTNEED);
}

/**
 * Once window w0 is computed and released, drops its cold runs from the page cache. Each
 * POSIX_FADV_DONTNEED drains every CPU's LRU batches (an IPI per CPU), hence runs, not
 * tensors. Pages only partly inside a run (shared with the next window) stay cached.
 */
void engine::drop_window(uint64_t w0) {
    while (!pending_drops_.empty() && pending_drops_.front().w0 < w0) pending_drops_.pop_front();
    if (pending_drops_.empty() || pending_drops_.front().w0 != w0) return;
    for (const prefetch_range & r : pending_drops_.front().cold) inputs_[r.file]->drop_cached(r.offset, r.length);
    pending_drops_.pop_front();
}
