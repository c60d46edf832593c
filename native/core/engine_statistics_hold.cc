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

/**
 * queue_statistics_reads' question for piece p (its span sp in output order): held (its
 * reads queued into the hold), map (the statistics read brings it in, as without the hold)
 * or later (the arena has no room now and the piece is not in the window about to be
 * computed: asked again at the next window, and nothing after it is queued before). A piece is
 * held if it has one write, its input runs fit the arena, and they are mostly not cached
 * (a cached piece reads faster from the page cache than from the disk).
 */
engine::hold_answer engine::hold_piece(size_t p, const plan_span & sp) {
    if (!hold_) return hold_answer::map;
    if (hold_state_[p] == hold_submitted || hold_state_[p] == hold_ready) return hold_answer::held;
    if (hold_state_[p] == hold_map) return hold_answer::map;
    const std::vector<prefetch_range> runs = piece_input_runs(p);
    bool cold = !runs.empty() && plan_.writes[p].size() == 1 && hold_->could_hold(runs);
    if (cold) {
        double bytes = 0, cached = 0;
        for (const prefetch_range & r : runs) {
            bytes += (double) r.length;
            cached += merge_run_residency(*inputs_[r.file], r.offset, r.length, job_.tuning.sampled_residency != 0) * (double) r.length;
        }
        cold = cached < 0.5 * bytes;
    }
    if (!cold) {
        hold_state_[p] = hold_map;
        return hold_answer::map;
    }
    if (hold_->submit(p, runs)) {
        hold_state_[p] = hold_submitted;
        return hold_answer::held;
    }
    if (sp.begin >= window_w1_) return hold_answer::later;
    hold_state_[p] = hold_map;
    return hold_answer::map;
}

/** Before piece p's statistics pass: waits for its reads if it is held, and lists its copy for exec (exec_context::held). */
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

/** Once output o's window ending at w1 is computed: gives back the room of the held pieces among spans [first, last) that it finished. */
void engine::release_held(size_t o, uint64_t w1, size_t first, size_t last) {
    if (!hold_) return;
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
    }
}
