// The engine's window loop (engine_internal.h): which output's window comes next, where it
// ends, and what each window gets before the writer takes it: zeros and literals, its pieces'
// reductions and bytes in groups, its CRC-32 ranges.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "crc32.h"
#include "engine_internal.h"
#include "writer.h"

/**
 * The piece the output's next window starts with. Outputs of one pass list the same pieces
 * in the same order (A's key order), so this is where the output stands in the inputs.
 */
size_t engine::position(size_t o, output_cursor & cur) const {
    const std::vector<plan_span> & spans = plan_.spans[o];
    while (cur.first < spans.size() && spans[cur.first].end <= cur.w0) cur.first++;
    for (size_t i = cur.first; i < spans.size(); i++)
        if (spans[i].piece != plan_literal) return spans[i].piece;
    return SIZE_MAX; // only literals and zeros left
}

/**
 * Which output's window comes next. Interleaved (the default): the output furthest behind in
 * the inputs, so all outputs of a pass (a sweep, a board's saved rows) move through the
 * inputs in step and each input page is fetched once and used by every output while cached,
 * even when the inputs are far bigger than the page cache. TENSORMERGE_INTERLEAVE=0: one
 * output after another (the inputs are walked once per output).
 */
size_t engine::next_output(std::vector<output_cursor> & cursors) const {
    size_t best = SIZE_MAX, best_pos = 0;
    for (size_t o = 0; o < cursors.size(); o++) {
        if (cursors[o].w0 >= job_.outputs[o].size) continue;
        if (!job_.tuning.interleave) return o;
        const size_t pos = position(o, cursors[o]);
        if (best == SIZE_MAX || pos < best_pos) best = o, best_pos = pos;
    }
    return best;
}

/**
 * The end of output o's window that starts at w0, when `done` output bytes of the job were
 * computed before it. Windows are window_ bytes, except with a ramp (ramp_ > 0): the job's
 * first windows are ramp_, ramp_, 2 ramp_, 4 ramp_, ... (each at most the bytes done so
 * far), so the writer starts after a small window's compute instead of a whole one's, and
 * the fresh pages of the window buffers are first touched a little at a time; over the
 * job's last 2 windows each window is half the bytes left (at least ramp_), so the write
 * left once compute ends is short. Every length but an output's last is a whole number of
 * pages (O_DIRECT offsets). Where windows end never changes the bytes (the carry in stream()).
 */
uint64_t engine::window_end(size_t o, uint64_t w0, uint64_t done) const {
    uint64_t len = window_;
    if (ramp_ > 0) {
        len = std::min(len, std::max(ramp_, done & ~(page - 1)));
        const uint64_t left = total_out_ - std::min(total_out_, done);
        if (left < 2 * window_) len = std::min(len, std::max(ramp_, (left / 2 + page - 1) & ~(page - 1)));
    }
    return std::min(job_.outputs[o].size, w0 + len);
}

merge_status engine::stream(merge_thread_pool & pool, merge_writer & writer, merge_prefetcher & prefetcher) {
    uint64_t submitted = 0;
    for (size_t o = 0; o < job_.outputs.size(); o++) {
        if (job_.outputs[o].size > 0) continue;
        writer.submit({o, nullptr, 0, 0, true});
        submitted++;
    }
    std::vector<output_cursor> cursors(job_.outputs.size());
    size_t previous = SIZE_MAX;
    for (size_t o; (o = next_output(cursors)) != SIZE_MAX; previous = o) {
        if (previous != SIZE_MAX && previous != o) n_switches_++;
        output_cursor & cur = cursors[o];
        const uint64_t size = job_.outputs[o].size;
        const std::vector<plan_span> & spans = plan_.spans[o];
        const uint64_t w0 = cur.w0, w1 = window_end(o, w0, done_);
        const uint64_t n_buffers = buffers_.size();
        uint8_t * buf = buffers_[submitted % n_buffers]->data;
        double t0 = now();
        // The buffer was used by window `submitted - n_buffers`: wait until it is on disk.
        if (submitted >= n_buffers && !writer.wait_completed(submitted - n_buffers + 1)) return writer.status();
        t_wait_ += now() - t0;
        if (job_.control.cancelled()) return aborted();

        t0 = now();
        if (w0 > 0) std::memcpy(buf, cur.carry, slack);
        while (cur.first < spans.size() && spans[cur.first].end <= w0) cur.first++;
        const size_t first = cur.first;
        size_t last = first;
        while (last < spans.size() && spans[last].begin < w1) last++;
        fill(o, w0, w1, buf, first, last);
        if (reader_) {
            t_fill_ += now() - t0;
            t0 = now();
            merge_status r = read_window(cursors, o, w0, w1, first);
            t_read_wait_ += now() - t0;
            if (!r.ok()) return r;
        } else {
            if (!job_.tuning.prefetch) {
                plan_window_reads(o, w0, w1, first, nullptr);
            } else {
                // The first window's reads are queued too: they start while it is computed.
                if (w0 == 0) plan_window_reads(o, w0, w1, first, &prefetcher);
                if (w1 < size) plan_window_reads(o, w1, window_end(o, w1, done_ + (w1 - w0)), first, &prefetcher);
            }
            t_fill_ += now() - t0;
        }

        if (statistics_ahead_) queue_statistics_reads(o, w0, first);
        t0 = now();
        merge_status s = compute(pool, o, w0, w1, buf, spans, first, last);
        t_compute_ += now() - t0;
        if (!s.ok()) return s;
        const int release = job_.tuning.release_inputs;
        if (release >= 1 && release <= 3) release_window(o, w0, w1, first);
        if (drop_behind_) reader_ ? drop_read_runs() : drop_window(w0);
        if (drop_behind_ && statistics_ahead_) drop_statistics_runs(o, w0, w1, first);
        release_held(o, w1, first, last);
        staged_ = nullptr;
        if (!job_.outputs[o].crc32_ranges.empty()) {
            t0 = now();
            crc_window(pool, o, w0, w1, buf);
            t_crc_ += now() - t0;
        }
        if (w1 < size) std::memcpy(cur.carry, buf + (w1 - w0), slack);

        writer.submit({o, buf, w0, w1 - w0, w1 == size});
        submitted++;
        n_windows_++;
        done_ += w1 - w0;
        cur.w0 = w1;
        // Test knob: lets a test act on the inputs at a known point of the job.
        if (job_.tuning.window_pause_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(job_.tuning.window_pause_ms));
    }
    return {};
}

/** Zeroes the bytes no span covers and copies the literals (single-threaded: both are small). */
void engine::fill(size_t o, uint64_t w0, uint64_t w1, uint8_t * buf, size_t first, size_t last) {
    const std::vector<plan_span> & spans = plan_.spans[o];
    uint64_t pos = w0;
    for (size_t i = first; i < last; i++) {
        const plan_span & sp = spans[i];
        if (sp.begin > pos) std::memset(buf + (pos - w0), 0, (size_t) (sp.begin - pos));
        if (sp.piece == plan_literal) {
            const uint64_t lo = std::max(sp.begin, w0), hi = std::min(sp.end, w1);
            std::memcpy(buf + (lo - w0), job_.outputs[o].literals[sp.index].data.data() + (lo - sp.begin), (size_t) (hi - lo));
        }
        pos = std::max(pos, sp.end);
    }
    if (pos < w1) std::memset(buf + (pos - w0), 0, (size_t) (w1 - pos));
}

/**
 * Extends the CRC of every range of output o over the window's (final) bytes. Each range's
 * part of the window is cut into segments checksummed in parallel, then combined in order.
 */
void engine::crc_window(merge_thread_pool & pool, size_t o, uint64_t w0, uint64_t w1, const uint8_t * buf) {
    struct segment {
        size_t range;
        uint64_t lo, hi;
        uint32_t crc;
    };
    constexpr uint64_t min_segment = 1u << 20;
    std::vector<segment> segments;
    const std::vector<merge_range> & ranges = job_.outputs[o].crc32_ranges;
    for (size_t r = 0; r < ranges.size(); r++) {
        const uint64_t lo = std::max(w0, ranges[r].offset), hi = std::min(w1, ranges[r].offset + ranges[r].length);
        if (lo >= hi) continue;
        const uint64_t n_parts = std::min<uint64_t>(pool.size(), (hi - lo + min_segment - 1) / min_segment);
        const uint64_t step = (hi - lo + n_parts - 1) / n_parts;
        for (uint64_t a = lo; a < hi; a += step) segments.push_back({r, a, std::min(hi, a + step), 0});
    }
    if (segments.empty()) return;
    std::atomic<size_t> next{0};
    const std::function<void(unsigned)> fn = [&](unsigned) {
        for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < segments.size();)
            segments[i].crc = merge_crc32_update(0, buf + (segments[i].lo - w0), (size_t) (segments[i].hi - segments[i].lo));
    };
    pool.run(fn);
    for (const segment & sg : segments) crc_[o][sg.range] = merge_crc32_combine(crc_[o][sg.range], sg.crc, sg.hi - sg.lo);
}

/**
 * Computes window [w0, w1) of an output: spans [first, last) in groups. Each group's pieces
 * with statistics are reduced (reduce_piece), then the group's bytes are written. A group
 * ends before the span that would take its pieces' input bytes above reuse_bytes_ (a group
 * holds at least one span): the output pass then reads, from the CPU caches, the inputs the
 * statistics pass of the same group has just read (the inputs of every piece of a window
 * reduced first, then written, went back to memory in between: the window reads 4× its
 * output bytes or more). reuse_bytes_ 0: the whole window is one group.
 */
merge_status engine::compute(merge_thread_pool & pool, size_t o, uint64_t w0, uint64_t w1, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last) {
    if (reduced_.empty()) reduced_.assign(job_.pieces.size(), false);
    for (size_t g0 = first; g0 < last;) {
        size_t g1 = g0;
        uint64_t bytes = 0;
        bool reduces = false;
        while (g1 < last) {
            const size_t p = spans[g1].piece;
            const uint64_t own = p == plan_literal ? 0 : piece_input_bytes(p);
            if (reuse_bytes_ > 0 && g1 > g0 && bytes + own > reuse_bytes_) break;
            // A piece waiting for the hold's room starts a group: the room of the pieces before it is given back first.
            if (g1 > g0 && p != plan_literal && !reduced_[p] && hold_waits(p)) break;
            bytes += own;
            reduces = reduces || (p != plan_literal && !reduced_[p] && !job_.pieces[p].reductions.empty());
            g1++;
        }
        // Without statistics to compute the whole rest of the window is one group (one pool run).
        if (!reduces)
            while (g1 < last && (spans[g1].piece == plan_literal || reduced_[spans[g1].piece] || job_.pieces[spans[g1].piece].reductions.empty())) g1++;
        for (size_t i = g0; i < g1; i++) {
            const size_t p = spans[i].piece;
            if (p == plan_literal || reduced_[p] || job_.pieces[p].reductions.empty()) continue;
            const double t0 = now();
            // A piece that waited takes its room now; the pieces after it may then be read while it computes.
            if (hold_waits(p)) {
                settle_held(p);
                if (statistics_ahead_) queue_statistics_reads(o, w0, first);
            }
            merge_status s = wait_held(p);
            if (s.ok()) s = reduce_piece(pool, p);
            t_reduce_ += now() - t0;
            if (!s.ok()) return s;
            reduced_[p] = true;
        }
        const uint64_t lo = g0 == first ? w0 : std::max(w0, spans[g0].begin), hi = g1 == last ? w1 : std::max(lo, std::min(w1, spans[g1].begin));
        merge_status s = write_group(pool, lo, hi, w0, buf, spans, g0, g1);
        if (!s.ok()) return s;
        // The held pieces this group finished give their room back, at once taken by the next ones.
        if (release_held(o, hi, g0, g1) && statistics_ahead_) queue_statistics_reads(o, w0, first);
        g0 = g1;
    }
    return {};
}

/** Writes the elements of spans [first, last) that start in [lo, hi) (window w0's buffer). */
merge_status engine::write_group(merge_thread_pool & pool, uint64_t lo, uint64_t hi, uint64_t w0, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last) {
    if (hi <= lo) return {};
    const uint64_t n_chunks = (hi - lo + chunk_bytes - 1) / chunk_bytes;
    // Chunks come in increasing order per thread, so each thread's span cursor only moves forward.
    std::vector<size_t> cursor(pool.size(), first);
    return run_items(pool, n_chunks, pool.size(), [&](unsigned ith, uint64_t c) {
        exec_scratch & scratch = *scratch_[ith];
        const uint64_t c0 = lo + c * chunk_bytes, c1 = std::min(hi, c0 + chunk_bytes);
        size_t & span = cursor[ith];
        while (span < last && spans[span].end <= c0) span++;
        for (size_t i = span; i < last && spans[i].begin < c1; i++) {
            const plan_span & sp = spans[i];
            if (sp.piece == plan_literal) continue;
            const plan_write & pw = plan_.writes[sp.piece][sp.index];
            uint64_t i0, i1;
            plan_elements_starting_in(sp.begin, pw.out_size, job_.pieces[sp.piece].n, c0, c1, &i0, &i1);
            if (i0 < i1) exec_write_range(ctx_, scratch, sp.piece, sp.index, i0, i1, buf + (sp.begin + i0 * pw.out_size - w0));
        }
    });
}
