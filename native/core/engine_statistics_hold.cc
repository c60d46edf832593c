// The engine's use of the statistics hold (statistics_hold.h, engine_internal.h): which pieces
// with statistics are held, waiting for them before their statistics pass, and giving their
// room back once their output pass is done.
#include <algorithm>
#include <cstdlib>
#include <unistd.h>

#include "engine_internal.h"
#include "residency.h"

/**
 * TENSORMERGE_STATISTICS_HOLD_MIB (default 128; 0: off, the map path for every piece): the
 * hold's arena, when the job has statistics read ahead (statistics_read_mode), reads each
 * input byte once (inputs_read_once) and bypasses the page cache (bypass_cache), but does not
 * drop behind (inputs > RAM/2: drop_behind_); else 0. On 2 x Mistral-7B (drop-behind) the hold
 * held 3.2 of 29 GB, read 30.7 GB from disk instead of 29.0 and doubled private memory (88 ->
 * 194 MiB) without a faster merge (bench/RESULTS.md, "The hold and the 7B pair"), so such
 * jobs keep the statistics read's populate path. The arena is the hold's whole memory: with the output
 * windows (2 x 32 MiB by default) and the reader's slots, if any, it bounds what the job keeps
 * privately (README "Library"). An eighth of the RAM at most.
 */
uint64_t engine::statistics_hold_budget() const {
    if (statistics_read_ == 0 || !read_once_ || !bypass_cache() || drop_behind_) return 0;
    uint64_t mib = 128;
    if (const char * v = std::getenv("TENSORMERGE_STATISTICS_HOLD_MIB")) {
        const long n = std::atol(v);
        mib = n < 0 ? 0 : (uint64_t) std::min(n, 1l << 16);
    }
    const uint64_t budget = mib << 20;
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    return pages > 0 && page_size > 0 ? std::min(budget, (uint64_t) pages / 8 * (uint64_t) page_size) : budget;
}

/** Makes the hold (no memory, no thread yet: its first piece makes them) if the job gets one. */
void engine::start_statistics_hold() {
    const uint64_t budget = statistics_hold_budget();
    if (budget < page) return;
    if (input_paths_.empty())
        for (const merge_input & in : job_.inputs) input_paths_.push_back(in.path);
    hold_.reset(new merge_statistics_hold(inputs_, input_paths_, budget, 4, job_.tuning.read_piece_bytes));
    hold_state_.assign(job_.pieces.size(), hold_undecided);
    hold_copies_.assign(job_.pieces.size(), staged_window{});
}

namespace {

/**
 * The first part of each of `runs` (the same fraction of each, so the same elements of every
 * input) that bytes_for fits in `room`, in 64 KiB multiples; empty if under 1 MiB in all. The
 * exec finds a block's bytes in the held copy when they lie inside it, else reads the map
 * (prefetch.h staged_window::find), so any cut gives the same bytes.
 */
std::vector<prefetch_range> hold_prefix(const std::vector<prefetch_range> & runs, uint64_t room) {
    constexpr uint64_t grain = 64u << 10;
    uint64_t total = 0;
    for (const prefetch_range & r : runs) total += r.length;
    const uint64_t slack = 2 * 4096 * runs.size(); // bytes_for's page rounding, at most
    if (total == 0 || room <= slack + (1u << 20)) return {};
    const uint64_t fit = room - slack;
    std::vector<prefetch_range> prefix;
    uint64_t bytes = 0;
    for (const prefetch_range & r : runs) {
        uint64_t n = (uint64_t) ((unsigned __int128) r.length * fit / total) / grain * grain;
        n = std::min(n, r.length);
        if (n > 0) prefix.push_back({r.file, r.offset, n, r.touch});
        bytes += n;
    }
    if (bytes < (1u << 20)) return {};
    return prefix;
}

/** What of `runs` is not in `prefix` (hold_prefix's cut of them). */
std::vector<prefetch_range> hold_rest(const std::vector<prefetch_range> & runs, const std::vector<prefetch_range> & prefix) {
    std::vector<prefetch_range> rest;
    for (const prefetch_range & r : runs) {
        uint64_t cut = 0;
        for (const prefetch_range & q : prefix)
            if (q.file == r.file && q.offset == r.offset) cut = q.length;
        if (cut < r.length) rest.push_back({r.file, r.offset + cut, r.length - cut, r.touch});
    }
    return rest;
}

} // namespace

/**
 * queue_statistics_reads' question for piece p: held (its reads queued into the hold), map (the
 * statistics read brings it in, as without the hold) or later (it waits: the arena has no room
 * for it now, or it is bigger than the arena; asked again once a piece's room is given back, and
 * at the latest settled by wait_held at its statistics pass). A piece may be held if it has one
 * write and its input runs are mostly not cached (a cached piece reads faster from the page
 * cache than from the disk). Pieces are submitted in output order (hold_blocked_): the ring then
 * gives room back in the order it was taken, and a big piece is not starved by the small ones
 * after it.
 */
engine::hold_answer engine::hold_piece(size_t p) {
    if (!hold_) return hold_answer::map;
    if (hold_state_[p] == hold_submitted || hold_state_[p] == hold_ready) return hold_answer::held;
    if (hold_state_[p] == hold_map) return hold_answer::map;
    const std::vector<prefetch_range> runs = piece_input_runs(p);
    if (hold_state_[p] == hold_undecided) {
        double bytes = 0, cached = 0;
        for (const prefetch_range & r : runs) {
            bytes += (double) r.length;
            cached += merge_run_residency(*inputs_[r.file], r.offset, r.length, job_.tuning.sampled_residency != 0) * (double) r.length;
        }
        if (runs.empty() || plan_.writes[p].size() != 1 || cached >= 0.5 * bytes) {
            (runs.empty() || plan_.writes[p].size() != 1 ? hold_miss_other_ : hold_miss_cached_) += (uint64_t) bytes;
            hold_state_[p] = hold_map;
            return hold_answer::map;
        }
        hold_state_[p] = hold_waiting;
    }
    if (!hold_blocked_ && hold_->could_hold(runs) && hold_->submit(p, runs)) {
        hold_state_[p] = hold_submitted;
        return hold_answer::held;
    }
    hold_blocked_ = true;
    return hold_answer::later;
}

/**
 * Before piece p's statistics pass, if it still waits: settles it now (the room of the pieces
 * before it was given back): held whole if it fits, else its runs' first part as fits (the rest
 * through the statistics read), else the map.
 */
void engine::settle_held(size_t p) {
    if (!hold_ || hold_state_[p] != hold_waiting) return;
    const std::vector<prefetch_range> runs = piece_input_runs(p);
    uint64_t total = 0;
    for (const prefetch_range & r : runs) total += r.length;
    if (hold_->could_hold(runs) && hold_->submit(p, runs)) {
        hold_state_[p] = hold_submitted;
    } else {
        const std::vector<prefetch_range> prefix = hold_prefix(runs, hold_->room());
        if (!prefix.empty() && hold_->submit(p, prefix)) {
            hold_state_[p] = hold_submitted;
            const std::vector<prefetch_range> rest = hold_rest(runs, prefix);
            for (const prefetch_range & r : rest) hold_rest_bytes_ += r.length;
            queue_statistics_populate(p, rest);
        } else {
            hold_state_[p] = hold_map;
            hold_miss_room_ += total;
            queue_statistics_populate(p, runs);
        }
    }
    if (hold_state_[p] == hold_submitted) statistics_queued_[p] = 3;
}

/** Before piece p's statistics pass (settle_held first): waits for its reads if it is held, and lists its copy for exec (exec_context::held). */
merge_status engine::wait_held(size_t p) {
    if (!hold_ || hold_state_[p] != hold_submitted) return {};
    staged_window & copy = hold_copies_[p];
    merge_status s = hold_->wait(p, &copy);
    if (!s.ok()) return s;
    held_window_.runs.insert(held_window_.runs.end(), copy.runs.begin(), copy.runs.end());
    std::sort(held_window_.runs.begin(), held_window_.runs.end(), [](const staged_run & x, const staged_run & y) {
        return x.file != y.file ? x.file < y.file : x.offset < y.offset;
    });
    hold_state_[p] = hold_ready;
    return {};
}

/**
 * Once the bytes of output o up to w1 are computed: gives back the room of the held pieces among
 * spans [first, last) that are done (compute() calls it after each group, so the pieces
 * after them find room within the window). True if any room was given back.
 */
bool engine::release_held(size_t o, uint64_t w1, size_t first, size_t last) {
    if (!hold_) return false;
    bool released = false;
    const std::vector<plan_span> & spans = plan_.spans[o];
    for (size_t i = first; i < last; i++) {
        const size_t p = spans[i].piece;
        if (p == plan_literal || hold_state_[p] != hold_ready || spans[i].end > w1) continue;
        const staged_window & copy = hold_copies_[p];
        held_window_.runs.erase(std::remove_if(held_window_.runs.begin(), held_window_.runs.end(),
                                               [&](const staged_run & r) { return copy.find(r.file, r.offset, r.length) == r.data; }),
                                held_window_.runs.end());
        hold_copies_[p] = staged_window{};
        hold_->release(p);
        hold_state_[p] = hold_map; // done: never asked again
        released = true;
    }
    return released;
}
