// The statistics read (engine_internal.h, TENSORMERGE_STATISTICS_READ): the inputs of pieces
// with statistics, such as SLERP's or TIES's, brought in by a helper thread ahead of their
// statistics pass, how far ahead, and their drop-behind.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "engine_internal.h"
#include "residency.h"

namespace {

/** /proc/meminfo's MemAvailable in bytes (free memory plus what the kernel can reclaim), or 0 if unknown. */
uint64_t merge_available_memory_bytes() {
    FILE * f = std::fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    bool found = false;
    while (!found && std::fgets(line, sizeof line, f)) found = std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1;
    std::fclose(f);
    return found ? (uint64_t) kib << 10 : 0;
}

} // namespace

/**
 * TENSORMERGE_STATISTICS_READ: how the inputs of pieces with statistics are brought in ahead
 * of their statistics pass (queue_statistics_reads). 0: not at all (the statistics pass
 * faults them into the map, 4 KiB at a time; the reader, if any, reads them again for the
 * output pass); 1 (the default) MADV_POPULATE_READ, 2 MADV_WILLNEED, 3 read() into a thrown-away
 * buffer, each by a helper thread (prefetch.h prefetch_mode). With 1-3 the reader leaves those
 * pieces to the map: the output pass finds their pages mapped by the statistics pass.
 * 0 for a job without statistics.
 */
int engine::statistics_read_mode() const {
    bool statistics = false;
    for (const auto & piece : job_.pieces) statistics = statistics || !piece.reductions.empty();
    if (!statistics) return 0;
    int mode = 1;
    if (const char * v = std::getenv("TENSORMERGE_STATISTICS_READ")) mode = std::atoi(v);
    return mode >= 0 && mode <= 3 ? mode : 1;
}

/**
 * TENSORMERGE_MAP_SEQUENTIAL: MADV_SEQUENTIAL on the input maps (1), or the default advice
 * (0). Default: 0 for jobs with the statistics read on (their pieces are populated from
 * unaligned offsets, where the sequential advice costs 4 KiB folios: file_io.h open), 1 for
 * the others (as before).
 */
bool engine::map_sequential() const {
    if (const char * v = std::getenv("TENSORMERGE_MAP_SEQUENTIAL")) return std::atoi(v) != 0;
    return statistics_read_mode() == 0;
}

/** Piece p's input byte ranges over all its elements, sorted and coalesced per file. */
std::vector<prefetch_range> engine::piece_input_runs(size_t p) const {
    std::vector<prefetch_range> ranges;
    for (const plan_write & pw : plan_.writes[p])
        for (const plan_input_ref & r : pw.inputs) ranges.push_back({r.file, r.offset, job_.pieces[p].n * r.elem_size});
    return sorted_coalesced(std::move(ranges));
}

/**
 * Queues for statistics_ahead_ the whole inputs of each piece with statistics, not yet
 * queued, that has elements in output o's window at w0 or the next one: the helper reads
 * them in while the pool computes (the next piece's while this one's output pass runs), in
 * steps that advance every input of the piece at the same pace, as the statistics pass
 * reads them. A piece that is already cached is populated (mode 1: its pages get mapped
 * without faults) or skipped (the other modes). Records which pieces were cold, for
 * drop_statistics_runs.
 */
void engine::queue_statistics_reads(size_t o, uint64_t w0, size_t first) {
    if (statistics_queued_.empty()) statistics_queued_.assign(job_.pieces.size(), 0);
    const std::vector<plan_span> & spans = plan_.spans[o];
    const uint64_t horizon = w0 + 2 * window_;
    hold_blocked_ = false;
    uint64_t ahead = 0; // input bytes of pieces with statistics from w0 on, still to be used by the output pass
    for (size_t i = first; i < spans.size(); i++) {
        const plan_span & sp = spans[i];
        const size_t p = sp.piece;
        if (sp.begin >= horizon && statistics_ahead_budget_ == 0) break;
        if (p == plan_literal || job_.pieces[p].reductions.empty()) continue;
        // Beyond the next window a piece is queued only if it fits the budget, in output order.
        const uint64_t own = span_inputs_left(sp, w0);
        if (sp.begin >= horizon && ahead + own > statistics_ahead_budget_) break;
        ahead += own;
        statistics_ahead_peak_ = std::max(statistics_ahead_peak_, ahead);
        if (statistics_queued_[p] != 0) continue;
        if (!reduced_.empty() && reduced_[p]) continue;
        // Held (statistics_hold.h): read into the hold, not the page cache; later: it waits for room
        // (queued again at the next call), and the pieces after it wait too (hold_blocked_).
        const hold_answer hold = hold_piece(p);
        if (hold == hold_answer::later) continue;
        if (hold == hold_answer::held) {
            statistics_queued_[p] = 3;
            continue;
        }
        queue_statistics_populate(p, piece_input_runs(p));
    }
}

/**
 * Queues `runs` (piece p's input runs, or the part of them its hold left out) for the statistics
 * read; records whether they were mostly cold (drop_statistics_runs).
 */
void engine::queue_statistics_populate(size_t p, const std::vector<prefetch_range> & runs) {
    const bool sampled = job_.tuning.sampled_residency != 0;
    constexpr uint64_t step = 4u << 20;
    double bytes = 0, cached = 0;
    uint64_t longest = 0;
    // The touch (prefetch.h) pays the first read of pages fresh from the disk; an input run
    // all cached when its piece is queued has none, and touching it is one more read of every line (warm SLERP
    // 2 x SD 1.5: +0.25 s of user CPU). run_cold decides it here, well ahead of the populate: just before
    // it, the kernel's read-ahead of the previous step makes cold steps look cached (2 x 7B:
    // 2.2 of 29 GB touched that way, 25.4 -> 30.1 s; bench/RESULTS.md "Quiet check, sixth session").
    std::vector<bool> run_cold(runs.size());
    for (size_t j = 0; j < runs.size(); j++) {
        const prefetch_range & r = runs[j];
        const double run_resident = merge_run_residency(*inputs_[r.file], r.offset, r.length, sampled);
        run_cold[j] = run_resident < 1.0;
        bytes += (double) r.length;
        cached += run_resident * (double) r.length;
        longest = std::max(longest, r.length);
    }
    const double resident = bytes > 0 ? cached / bytes : 1.0;
    statistics_queued_[p] = resident < 0.5 ? 2 : 1;
    if (resident >= 1.0 && statistics_read_ != 1) return;
    // Step k of every run covers the same fraction of it: [k/K, (k+1)/K) of its bytes.
    const uint64_t k_steps = std::max<uint64_t>(1, (longest + step - 1) / step);
    std::vector<prefetch_range> steps;
    for (uint64_t k = 0; k < k_steps; k++)
        for (size_t j = 0; j < runs.size(); j++) {
            const prefetch_range & r = runs[j];
            const uint64_t a = (uint64_t) ((unsigned __int128) r.length * k / k_steps), b = (uint64_t) ((unsigned __int128) r.length * (k + 1) / k_steps);
            if (b > a) steps.push_back({r.file, r.offset + a, b - a, run_cold[j]});
        }
    statistics_ahead_->submit(std::move(steps));
}

/**
 * The input bytes span sp still reads from w0 on (its write's inputs, in proportion to the
 * output bytes left): what of them the page cache must still hold for the output pass.
 */
uint64_t engine::span_inputs_left(const plan_span & sp, uint64_t w0) const {
    uint64_t bytes = 0;
    for (const plan_input_ref & r : plan_.writes[sp.piece][sp.index].inputs) bytes += job_.pieces[sp.piece].n * r.elem_size;
    if (w0 <= sp.begin || sp.end <= sp.begin) return bytes;
    return (uint64_t) ((unsigned __int128) bytes * (sp.end - std::min(w0, sp.end)) / (sp.end - sp.begin));
}

/**
 * TENSORMERGE_STATISTICS_AHEAD_MIB (default 512): how far ahead of the output pass the
 * statistics read may go, in input bytes of pieces with statistics (those of this window and
 * the next are always queued; 0: only those, the behaviour before). Without it a big
 * tensor's reads waited for the previous one's output pass instead of overlapping its writes.
 * Capped at a quarter of the memory available (MemAvailable) when the job starts, so that
 * nothing read ahead is evicted before both passes used it. The pages are the page cache's,
 * mapped shared: they never count as the process's private memory.
 */
uint64_t engine::statistics_ahead_budget_for() {
    uint64_t mib = 512;
    if (const char * v = std::getenv("TENSORMERGE_STATISTICS_AHEAD_MIB")) {
        const long n = std::atol(v);
        mib = n < 0 ? 0 : (uint64_t) std::min(n, 1l << 20);
    }
    const uint64_t available = merge_available_memory_bytes();
    const uint64_t budget = mib << 20;
    return available > 0 ? std::min(budget, available / 4) : budget;
}

/**
 * Drop-behind for the pieces the statistics read brought in cold: once window w0 of output
 * o is computed and released (unmapped), their input runs in it leave the page cache.
 */
void engine::drop_statistics_runs(size_t o, uint64_t w0, uint64_t w1, size_t first) {
    for (const prefetch_range & r : window_runs(o, w0, w1, first, runs_of::cold_read_ahead)) inputs_[r.file]->drop_cached(r.offset, r.length);
}
