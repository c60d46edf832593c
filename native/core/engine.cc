#include "engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <sys/mman.h>
#include <unistd.h>

#include "buffer_pool.h"
#include "cpu.h"
#include "crc32.h"
#include "exec.h"
#include "fault_guard.h"
#include "file_io.h"
#include "plan.h"
#include "prefetch.h"
#include "reductions.h"
#include "residency.h"
#include "thread_pool.h"
#include "writer.h"

namespace {

constexpr uint64_t page = 4096;
constexpr uint64_t slack = 64;          // > the largest element (8 bytes): room for the element that straddles a window's end
constexpr uint64_t chunk_bytes = 1u << 20; // output bytes per work item (cancel granularity)

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/** Output bytes per window: tuning.window_bytes in pages, at most the largest output (in pages). */
uint64_t window_bytes_for(const merge_tuning & tuning, uint64_t max_output_bytes) {
    uint64_t w = std::max<uint64_t>(page, tuning.window_bytes & ~(page - 1));
    w = std::min(w, (max_output_bytes + page - 1) & ~(page - 1));
    return w == 0 ? page : w;
}

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

/** First failure wins; workers poll `stop` between chunks. */
struct run_state {
    std::atomic<bool> stop{false};
    std::mutex mutex;
    merge_status status;

    void fail(merge_status s) {
        std::lock_guard<std::mutex> lock(mutex);
        if (status.ok()) status = std::move(s);
        stop.store(true, std::memory_order_relaxed);
    }
};

class engine {
public:
    engine(const merge_job & job, merge_result * result) : job_(job), result_(result) {}
    ~engine() { merge_buffer_pool_clear(); } // what the job's preparation pooled and it did not take

    merge_status run() {
        const double t_start = now();
        merge_status s = merge_job_validate(job_);
        if (!s.ok()) return s;
        const merge_kernels * kernels = merge_kernels_for(job_.isa);
        if (!kernels)
            return merge_status::fail(merge_error::INVALID_ARGUMENT, std::string("this CPU (or build) cannot run the ") + merge_isa_name(job_.isa) + " kernels");
        merge_plan_build(job_, &plan_);
        // A SIGBUS on an input map (the file was truncated, or its disk failed) becomes an
        // error of this job (see fault_guard.h). The pool threads inherit the unblocked mask.
        merge_fault_handler_install();
        merge_fault_thread_scope sigbus_unblocked;

        inputs_.resize(job_.inputs.size());
        const bool sequential_maps = map_sequential();
        for (size_t i = 0; i < job_.inputs.size(); i++) {
            inputs_[i].reset(new merge_input_map());
            s = inputs_[i]->open(job_.inputs[i].path, job_.inputs[i].size, sequential_maps);
            if (!s.ok()) return s;
            if (inputs_[i]->data())
                fault_ranges_.push_back({(uintptr_t) inputs_[i]->data(), (uintptr_t) inputs_[i]->data() + inputs_[i]->mapped_length()});
        }
        // O_DIRECT by default: the writes then cost no page-cache copy (a third of the CPU time
        // of a buffered run) and the final fsync has little left to flush. Falls back to
        // buffered writes where the filesystem refuses it.
        const bool direct = job_.tuning.direct_io != 0;
        outputs_.resize(job_.outputs.size());
        for (size_t o = 0; o < job_.outputs.size(); o++) {
            outputs_[o].reset(new merge_output_file());
            s = outputs_[o]->create(job_.outputs[o].path, job_.outputs[o].size, direct);
            if (!s.ok()) return s;
        }
        const double t_opened = now();

        uint64_t max_size = 0;
        for (const merge_output & out : job_.outputs) max_size = std::max(max_size, out.size);
        window_ = window_bytes_for(job_.tuning, max_size);
        read_once_ = inputs_read_once();
        drop_behind_ = wants_drop_behind();
        statistics_read_ = statistics_read_mode();
        statistics_ahead_budget_ = statistics_read_ > 0 ? statistics_ahead_budget_for() : 0;
        if (job_.tuning.buffered_reads == 1 || job_.tuning.buffered_reads == 2) start_reader();
        set_ramp(); // after start_reader, which may narrow the window
        const int n_buffers = std::max(2, std::min(64, job_.tuning.output_buffers));
        take_buffers(n_buffers);

        const unsigned n_threads = job_.threads;
        const size_t block = exec_block_size(plan_.max_ops);
        for (unsigned t = 0; t < n_threads; t++) scratch_.emplace_back(new exec_scratch(plan_.max_ops, block, job_.outputs.size()));
        // release_inputs: 0 never unmap consumed input pages; 1 (default) unmap each window's
        // pages once it is computed, plus drop-behind when wants_drop_behind(); 2 the same
        // without drop-behind; 3 with drop-behind always; 4 unmap per 1 MiB chunk inside the
        // compute threads (the old default: many more munmap TLB shootdowns, which cost an IPI
        // per CPU and, in a VM, a VM exit each: 25% more CPU on warm SDXL).
        piece_stats_.assign(job_.pieces.size(), {});
        // The k-th magnitude key cache (reductions.h); a test and benchmark knob outside the job contract.
        if (const char * v = std::getenv("TENSORMERGE_REDUCTION_CACHE_KIB")) {
            const long kib = std::atol(v);
            if (kib >= 0 && kib <= (4l << 20)) reduction_options_.cache_bytes = (uint64_t) kib << 10;
        }
        // The k-th magnitude's sampled bracket (kth_bracket.h): 0 turns it off (the radix path
        // only); TENSORMERGE_KTH_BRACKET_KEYS caps each reduction's buffer (a tiny one forces the fallback).
        if (const char * v = std::getenv("TENSORMERGE_KTH_BRACKET")) reduction_options_.bracket = std::atol(v) != 0;
        // TENSORMERGE_KTH_FUSED=0: the bracket pass of TIES's task vectors through scratch slots
        // (exec_run_ops, then the scan), not straight from the F16 inputs; the same bits either way.
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
        // fp8 pair tables (pair_table.h); TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS: the elements a
        // table's writes must cover together (a test and benchmark knob; a huge value turns them off).
        uint64_t pair_min = PAIR_TABLE_MIN_ELEMENTS;
        if (const char * v = std::getenv("TENSORMERGE_PAIR_TABLE_MIN_ELEMENTS")) {
            const long long e = std::atoll(v);
            if (e >= 0) pair_min = (uint64_t) e;
        }
        const double t_pair = now();
        merge_pair_tables_build(job_, kernels, pair_min, &pair_tables_);
        const double t_pair_built = now();
        ctx_ = exec_context{&job_, &plan_, kernels, &inputs_, job_.tuning.release_inputs == 4, &piece_stats_, &staged_, &pair_tables_};
        // TENSORMERGE_TASK_MERGE_FUSED=0: TIES's output pass on fp16 inputs through scratch slots
        // (widened, merged, stored), not the fused kernel (exec.h fused_task_merge); the same bits.
        if (const char * v = std::getenv("TENSORMERGE_TASK_MERGE_FUSED")) ctx_.fused_task_merge = std::atol(v) != 0;

        crc_.resize(job_.outputs.size());
        for (size_t o = 0; o < job_.outputs.size(); o++) crc_[o].assign(job_.outputs[o].crc32_ranges.size(), 0);

        merge_thread_pool pool(n_threads);
        merge_prefetcher prefetcher(inputs_);
        if (job_.tuning.prefetch && !reader_) prefetcher.start();
        // TENSORMERGE_STATISTICS_READERS: the statistics read's helper threads (requests in flight).
        unsigned statistics_readers = 1;
        if (const char * v = std::getenv("TENSORMERGE_STATISTICS_READERS")) statistics_readers = (unsigned) std::max(1, std::min(8, std::atoi(v)));
        // TENSORMERGE_STATISTICS_TOUCH: the helper reads what it populated (prefetch.h), so the
        // statistics pass reads data already touched: cold 2 x 7B at 1/2 size, its seconds fell
        // from 12.5-20.5 to 4.5-7.1 in 5 of 6 runs; SD 1.5 with the page cache empty showed no gain
        // (bench/RESULTS.md "Statistics read ahead"). 1 (default): one byte per 4 KiB page, which
        // pays the fresh page's cost; 2: one per 64-byte line (the behaviour before, a third read
        // of every line); 0: no touch.
        uint32_t statistics_touch_stride = 4096;
        if (const char * v = std::getenv("TENSORMERGE_STATISTICS_TOUCH")) {
            const int t = std::atoi(v);
            statistics_touch_stride = t == 0 ? 0 : t == 2 ? 64 : 4096;
        }
        merge_prefetcher statistics_ahead(inputs_, statistics_read_ == 2 ? prefetch_mode::willneed : statistics_read_ == 3 ? prefetch_mode::pread : prefetch_mode::populate,
                                          statistics_readers, statistics_touch_stride);
        if (statistics_read_ > 0) {
            statistics_ahead.start();
            statistics_ahead_ = &statistics_ahead;
        }
        merge_writer writer(job_, outputs_);
        writer.start();
        s = stream(pool, writer, prefetcher);
        const double t_computed = now();
        prefetcher.stop();
        statistics_ahead.stop();
        statistics_ahead_ = nullptr;
        staged_ = nullptr;
        if (reader_) reader_->stop();
        if (s.ok()) {
            writer.drain();
            if (writer.failed()) s = writer.status();
        } else {
            writer.stop();
        }
        const double t_drained = now();
        if (s.ok() && job_.control.cancelled()) s = aborted();
        // An input rewritten in place (same size) reads without a fault but mixes two versions.
        for (size_t i = 0; s.ok() && i < inputs_.size(); i++) s = inputs_[i]->check_unchanged(job_.inputs[i].path);
        if (!s.ok()) return s; // outputs_ unlink their files when destroyed

        for (auto & out : outputs_) out->keep();
        result_->crc32 = crc_;
        result_->nonfinite.assign(job_.outputs.size(), merge_nonfinite{});
        uint64_t task_merge_fused = 0;
        for (const auto & sc : scratch_) {
            for (size_t o = 0; o < job_.outputs.size(); o++) {
                result_->nonfinite[o].nan += sc->nonfinite()[o].nan;
                result_->nonfinite[o].inf += sc->nonfinite()[o].inf;
            }
            task_merge_fused += sc->fused_elements();
        }
        result_->isa = kernels->isa;
        result_->threads = n_threads;
        uint64_t total = 0;
        for (const merge_output & out : job_.outputs) total += out.size;
        result_->bytes_written = total;
        job_.control.set_done((double) total);
        const double t_end = now();
        result_->stats = {
            {"seconds", t_end - t_start},
            {"secondsOpen", t_opened - t_start},
            {"secondsCompute", t_compute_},
            {"secondsFill", t_fill_},
            {"secondsWaitWriter", t_wait_},
            {"secondsWrite", writer.seconds_writing()},
            // The pipeline's two ends: job start to the first write, and the writes left once the
            // last window is computed; the writer's idle time in between (waiting for a window).
            {"secondsFirstWrite", writer.first_write_at() > 0 ? writer.first_write_at() - t_start : 0.0},
            {"secondsDrain", t_drained - t_computed},
            {"secondsWriterIdle", writer.seconds_idle()},
            {"rampBytes", (double) ramp_},
            {"secondsCrc32", t_crc_},
            {"secondsSync", writer.seconds_sync()},
            {"windows", (double) n_windows_},
            {"windowBytes", (double) window_},
            {"outputBuffers", (double) buffers_.size()},
            {"outputBuffersPrefaulted", (double) prefaulted_},
            {"blockElements", (double) block},
            {"bytesDirectIo", (double) direct_bytes()},
            {"dropBehind", drop_behind_ ? 1.0 : 0.0},
            {"inputsReadOnce", read_once_ ? 1.0 : 0.0},
            {"interleave", job_.tuning.interleave ? 1.0 : 0.0},
            {"outputSwitches", (double) n_switches_},
            {"secondsReduce", t_reduce_},
            {"pairTables", (double) pair_tables_.tables.size()},
            {"secondsPairTables", t_pair_built - t_pair},
            {"sampledResidency", job_.tuning.sampled_residency != 0 ? 1.0 : 0.0},
            {"bufferedReads", reader_ ? 1.0 : 0.0},
            {"inputCacheBypass", bypass_cache() ? 1.0 : 0.0},
            {"bytesBufferedRead", reader_ ? (double) reader_->bytes_buffered() : 0.0},
            {"bytesDirectRead", reader_ ? (double) reader_->bytes_direct() : 0.0},
            {"directReadFallbacks", reader_ ? (double) reader_->direct_fallbacks() : 0.0},
            {"readers", reader_ ? (double) readers_ : 0.0},
            {"secondsReading", reader_ ? reader_->seconds_reading() : 0.0},
            {"secondsWaitRead", t_read_wait_},
            {"reductionCachedElements", (double) reduction_cached_},
            {"reductionKthElements", (double) reduction_elements_},
            {"reductionBracketHits", (double) bracket_hits_},
            {"reductionBracketMisses", (double) bracket_misses_},
            {"reductionFusedElements", (double) fused_elements_},
            {"taskMergeFusedElements", (double) task_merge_fused},
            {"statisticsRead", (double) (statistics_read_ > 0 && statistics_ahead.mode() == prefetch_mode::willneed ? 2 : statistics_read_)},
            {"bytesStatisticsAhead", (double) statistics_ahead.bytes_ahead()},
            {"bytesStatisticsTouched", (double) statistics_ahead.bytes_touched()},
            {"statisticsAheadBudget", (double) statistics_ahead_budget_},
            {"statisticsTouch", statistics_read_ == 1 && statistics_ahead.touches() ? 1.0 : 0.0},
            {"statisticsTouchStride", statistics_read_ == 1 ? (double) statistics_ahead.touch_stride() : 0.0},
            {"statisticsAheadPeak", (double) statistics_ahead_peak_},
            {"mapSequential", map_sequential() ? 1.0 : 0.0},
        };
        return {};
    }

private:
    const merge_job & job_;
    merge_result * result_;
    merge_plan plan_;
    std::vector<std::unique_ptr<merge_input_map>> inputs_;
    std::vector<merge_fault_range> fault_ranges_; // the input maps, for the SIGBUS guard
    std::vector<std::unique_ptr<merge_output_file>> outputs_;
    std::vector<std::string> input_paths_;
    std::unique_ptr<merge_input_reader> reader_; // buffered reads of uncached input runs (null: the maps only)
    const staged_window * staged_ = nullptr;     // the window being computed's read runs (exec_context::staged)
    double t_read_wait_ = 0;
    unsigned readers_ = 0; // the reader's threads
    std::vector<std::shared_ptr<merge_io_buffer>> buffers_; // tuning.output_buffers windows, used in turn
    int prefaulted_ = 0; // of them, taken from the pool (prepareOutputBuffers in the binding)
    std::vector<std::unique_ptr<exec_scratch>> scratch_;
    merge_pair_tables pair_tables_;
    exec_context ctx_{};
    // Per piece, its reduction results once computed (a few doubles each; see reductions.h).
    std::vector<std::vector<merge_reduction_result>> piece_stats_;
    std::vector<bool> reduced_;
    reduction_options reduction_options_;
    // compute(): input bytes of a group of spans reduced, then written. Off by default: with groups
    // (16 MiB) 2 x 7B TIES took 195 CPU-s against 41 without (bench/RESULTS.md "Night check").
    uint64_t reuse_bytes_ = 0;
    std::unique_ptr<reduction_key_store> key_store_;   // the radix path's k-th magnitude key cache (allocated when that path runs)
    std::unique_ptr<reduction_key_store> small_store_; // small pieces' keys, the brackets' samples and buffers
    uint64_t reduction_cached_ = 0, reduction_elements_ = 0; // k-th magnitude elements whose keys were cached, of all
    uint64_t bracket_hits_ = 0, bracket_misses_ = 0;         // k-th magnitude reductions resolved by their bracket, or not
    uint64_t fused_elements_ = 0;                             // elements of pieces whose bracket pass was fused (reductions.h fused())
    double t_reduce_ = 0;
    uint64_t window_ = 0;
    uint64_t ramp_ = 0;      // the ramp windows' smallest size (window_end); 0: no ramp
    uint64_t total_out_ = 0; // output bytes of the whole job
    uint64_t done_ = 0;      // output bytes of the windows computed so far
    uint64_t n_windows_ = 0;
    uint64_t n_switches_ = 0; // consecutive windows of different outputs
    bool read_once_ = false; // inputs_read_once(), computed once per run
    // The statistics read (statistics_read_mode): 0 off, else the mode of statistics_ahead_.
    int statistics_read_ = 0;
    merge_prefetcher * statistics_ahead_ = nullptr; // run()'s statistics prefetcher while stream() runs
    uint64_t statistics_ahead_budget_ = 0; // statistics_ahead_budget_for()
    uint64_t statistics_ahead_peak_ = 0;   // the most input bytes queue_statistics_reads counted ahead of the output pass
    // Per piece: 0 not queued for the statistics read, 1 queued (mostly cached), 2 queued cold (drop-behind)
    std::vector<uint8_t> statistics_queued_;
    bool drop_behind_ = false;
    struct window_drop {
        uint64_t w0;
        std::vector<prefetch_range> cold;
    };
    std::deque<window_drop> pending_drops_; // windows noted, not yet computed
    double t_compute_ = 0, t_fill_ = 0, t_wait_ = 0, t_crc_ = 0;
    std::vector<std::vector<uint32_t>> crc_; // running CRC per output and range

    uint64_t direct_bytes() const {
        uint64_t n = 0;
        for (const auto & out : outputs_) n += out->direct_bytes();
        return n;
    }

    static merge_status aborted() { return merge_status::fail(merge_error::ABORTED, "the merge was cancelled"); }

    /** The error for a SIGBUS at `address`, which lies in one of the input maps. */
    merge_status fault_status(uintptr_t address) const {
        for (size_t i = 0; i < inputs_.size(); i++) {
            const uintptr_t base = (uintptr_t) inputs_[i]->data();
            if (base != 0 && address >= base && address - base < inputs_[i]->mapped_length())
                return inputs_[i]->fault_status(job_.inputs[i].path, address - base);
        }
        return merge_status::fail(merge_error::IO_ERROR, "a read of an input failed (SIGBUS)");
    }

    /** Where one output's stream stands: its next window, and the bytes carried into it. */
    struct output_cursor {
        uint64_t w0 = 0;
        size_t first = 0;      // first span that ends after w0
        uint8_t carry[slack];  // bytes of an element that started in the previous window and spilled past it
    };

    /**
     * The piece the output's next window starts with. Outputs of one pass list the same pieces
     * in the same order (A's key order), so this is where the output stands in the inputs.
     */
    size_t position(size_t o, output_cursor & cur) const {
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
    size_t next_output(std::vector<output_cursor> & cursors) const {
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
     * The output window buffers: those the job's preparation faulted in (buffer_pool.h) where
     * their size fits this job's window, fresh ones (huge pages where the kernel allows) for the rest.
     */
    void take_buffers(int n_buffers) {
        for (int b = 0; b < n_buffers; b++) {
            std::shared_ptr<merge_io_buffer> buf = merge_buffer_pool_take(window_ + slack);
            if (buf) prefaulted_++;
            else buf = std::make_shared<merge_io_buffer>(window_ + slack);
            buffers_.push_back(std::move(buf));
        }
        // Pooled buffers this job did not take (the reader narrowed its window) are freed now, not
        // at the job's end: held for the whole job they added 64 MiB of private memory to a cold run.
        merge_buffer_pool_clear();
    }

    /** The ramp's smallest window: tuning.ramp_bytes in pages, at most a window; 0 when a ramp would not shorten anything. */
    void set_ramp() {
        for (const merge_output & out : job_.outputs) total_out_ += out.size;
        ramp_ = std::min(window_, job_.tuning.ramp_bytes & ~(page - 1));
        if (ramp_ >= window_) ramp_ = 0;
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
    uint64_t window_end(size_t o, uint64_t w0, uint64_t done) const {
        uint64_t len = window_;
        if (ramp_ > 0) {
            len = std::min(len, std::max(ramp_, done & ~(page - 1)));
            const uint64_t left = total_out_ - std::min(total_out_, done);
            if (left < 2 * window_) len = std::min(len, std::max(ramp_, (left / 2 + page - 1) & ~(page - 1)));
        }
        return std::min(job_.outputs[o].size, w0 + len);
    }

    merge_status stream(merge_thread_pool & pool, merge_writer & writer, merge_prefetcher & prefetcher) {
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
            merge_status s = compute(pool, w0, w1, buf, spans, first, last);
            t_compute_ += now() - t0;
            if (!s.ok()) return s;
            const int release = job_.tuning.release_inputs;
            if (release >= 1 && release <= 3) release_window(o, w0, w1, first);
            if (drop_behind_) reader_ ? drop_read_runs() : drop_window(w0);
            if (drop_behind_ && statistics_ahead_) drop_statistics_runs(o, w0, w1, first);
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
    void fill(size_t o, uint64_t w0, uint64_t w1, uint8_t * buf, size_t first, size_t last) {
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

    /** Which pieces' inputs window_inputs lists. */
    enum class runs_of {
        all,
        not_read_ahead,  // without the pieces the statistics read brings in (the reader's share)
        cold_read_ahead, // only those of them that were not cached (drop_statistics_runs)
    };

    /** Whether window_inputs lists piece p under `which`. */
    bool lists(size_t p, runs_of which) const {
        if (which == runs_of::all) return true;
        const uint8_t queued = statistics_queued_.empty() || !statistics_ahead_ ? 0 : statistics_queued_[p];
        return which == runs_of::not_read_ahead ? !(statistics_ahead_ && !job_.pieces[p].reductions.empty()) : queued == 2;
    }

    /** The input byte ranges read by the elements that start in [w0, w1) of output o. */
    std::vector<prefetch_range> window_inputs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which = runs_of::all) {
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
    bool wants_drop_behind() const {
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
    bool inputs_read_once() const {
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
    static std::vector<prefetch_range> sorted_coalesced(std::vector<prefetch_range> ranges) {
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
    std::vector<prefetch_range> window_runs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which = runs_of::all) {
        std::vector<prefetch_range> ranges = window_inputs(o, w0, w1, first, which);
        return sorted_coalesced(std::move(ranges));
    }

    /** Whether uncached input runs skip the page cache (merge_input_cache, job.h). */
    bool bypass_cache() const {
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
    void start_reader() {
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
    bool reader_has_work() const {
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
    merge_status read_window(const std::vector<output_cursor> & cursors, size_t o, uint64_t w0, uint64_t w1, size_t first) {
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
    void drop_read_runs() {
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
    void plan_window_reads(size_t o, uint64_t w0, uint64_t w1, size_t first, merge_prefetcher * prefetcher) {
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
    void release_window(size_t o, uint64_t w0, uint64_t w1, size_t first) {
        for (const prefetch_range & r : window_runs(o, w0, w1, first)) inputs_[r.file]->advise(r.offset, r.length, MADV_DONTNEED);
    }

    /**
     * Once window w0 is computed and released, drops its cold runs from the page cache. Each
     * POSIX_FADV_DONTNEED drains every CPU's LRU batches (an IPI per CPU), hence runs, not
     * tensors. Pages only partly inside a run (shared with the next window) stay cached.
     */
    void drop_window(uint64_t w0) {
        while (!pending_drops_.empty() && pending_drops_.front().w0 < w0) pending_drops_.pop_front();
        if (pending_drops_.empty() || pending_drops_.front().w0 != w0) return;
        for (const prefetch_range & r : pending_drops_.front().cold) inputs_[r.file]->drop_cached(r.offset, r.length);
        pending_drops_.pop_front();
    }

    /**
     * Extends the CRC of every range of output o over the window's (final) bytes. Each range's
     * part of the window is cut into segments checksummed in parallel, then combined in order.
     */
    void crc_window(merge_thread_pool & pool, size_t o, uint64_t w0, uint64_t w1, const uint8_t * buf) {
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
     * Computes the reductions of piece p with every pool thread (reductions.h), when the first
     * window that writes any of its elements starts. Its input pages are not released in between:
     * the window release only unmaps the pages of elements already written, so the piece's later
     * windows read from the page cache what this pass faulted in (inputs read from disk once).
     */
    /**
     * Runs item(ith, i) for i in [0, count) on the pool's threads with index < active, each
     * thread taking the next item until none is left, a failure stops the others, or the job is
     * cancelled. item reads the input maps: it runs inside merge_fault_run, so a SIGBUS becomes
     * this job's error (it must keep nothing with a destructor on its stack).
     */
    template <typename Item>
    merge_status run_items(merge_thread_pool & pool, uint64_t count, unsigned active, const Item & item) {
        run_state state;
        std::atomic<uint64_t> next{0};
        const std::function<void(unsigned)> fn = [&](unsigned ith) {
            if (ith >= active) return;
            try {
                for (;;) {
                    if (state.stop.load(std::memory_order_relaxed)) return;
                    if (job_.control.cancelled()) {
                        state.fail(aborted());
                        return;
                    }
                    const uint64_t i = next.fetch_add(1, std::memory_order_relaxed);
                    if (i >= count) return;
                    uintptr_t fault = 0;
                    const merge_fault_outcome outcome = merge_fault_run(fault_ranges_.data(), fault_ranges_.size(), &fault, [&] { item(ith, i); });
                    if (outcome == merge_fault_outcome::faulted) {
                        state.fail(fault_status(fault));
                        return;
                    }
                    if (outcome == merge_fault_outcome::no_slot) {
                        state.fail(merge_status::fail(merge_error::INTERNAL, "too many merge threads running at once in this process"));
                        return;
                    }
                }
            } catch (const std::bad_alloc &) {
                state.fail(merge_status::fail(merge_error::INTERNAL, "out of memory in a merge thread"));
            } catch (...) {
                state.fail(merge_status::fail(merge_error::INTERNAL, "unexpected exception in a merge thread"));
            }
        };
        pool.run(fn);
        return state.status;
    }

    /**
     * Computes the reductions of piece p with every pool thread (reductions.h), when the first
     * window that writes any of its elements starts. Its input pages are not released in between:
     * the window release only unmaps the pages of elements already written, so the piece's later
     * windows read from the page cache what this pass faulted in (inputs read from disk once).
     */
    merge_status reduce_piece(merge_thread_pool & pool, size_t p) {
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
     * TENSORMERGE_STATISTICS_READ: how the inputs of pieces with statistics are brought in ahead
     * of their statistics pass (queue_statistics_reads). 0: not at all (the statistics pass
     * faults them into the map, 4 KiB at a time; the reader, if any, reads them again for the
     * output pass); 1 (the default) MADV_POPULATE_READ, 2 MADV_WILLNEED, 3 read() into a thrown-away
     * buffer, each by a helper thread (prefetch.h prefetch_mode). With 1-3 the reader leaves those
     * pieces to the map: the output pass finds their pages mapped by the statistics pass.
     * 0 for a job without statistics.
     */
    int statistics_read_mode() const {
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
    bool map_sequential() const {
        if (const char * v = std::getenv("TENSORMERGE_MAP_SEQUENTIAL")) return std::atoi(v) != 0;
        return statistics_read_mode() == 0;
    }

    /** Piece p's input byte ranges over all its elements, sorted and coalesced per file. */
    std::vector<prefetch_range> piece_input_runs(size_t p) const {
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
    void queue_statistics_reads(size_t o, uint64_t w0, size_t first) {
        if (statistics_queued_.empty()) statistics_queued_.assign(job_.pieces.size(), 0);
        const std::vector<plan_span> & spans = plan_.spans[o];
        const uint64_t horizon = w0 + 2 * window_;
        const bool sampled = job_.tuning.sampled_residency != 0;
        constexpr uint64_t step = 4u << 20;
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
            const std::vector<prefetch_range> runs = piece_input_runs(p);
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
            if (resident >= 1.0 && statistics_read_ != 1) continue;
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
    }

    /**
     * The input bytes span sp still reads from w0 on (its write's inputs, in proportion to the
     * output bytes left): what of them the page cache must still hold for the output pass.
     */
    uint64_t span_inputs_left(const plan_span & sp, uint64_t w0) const {
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
    static uint64_t statistics_ahead_budget_for() {
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
    void drop_statistics_runs(size_t o, uint64_t w0, uint64_t w1, size_t first) {
        for (const prefetch_range & r : window_runs(o, w0, w1, first, runs_of::cold_read_ahead)) inputs_[r.file]->drop_cached(r.offset, r.length);
    }

    /**
     * The reduction options for piece p: the descending block order (reduce groups on) only for
     * a piece whose inputs fit the group budget, whose output pass then reads them from the CPU
     * caches; a bigger piece is reduced forwards, so its statistics pass never reads a big cold
     * tensor backwards against the kernel's read-ahead (that cost 2 x 7B TIES 195 CPU-s against
     * 41; bench/RESULTS.md "Night check"). Results do not depend on the order (reductions.h).
     */
    reduction_options piece_reduction_options(size_t p) const {
        reduction_options options = reduction_options_;
        if (options.descending && piece_input_bytes(p) > reuse_bytes_) options.descending = false;
        return options;
    }

    /** Input bytes piece p's writes read (its distinct input streams over all its elements). */
    uint64_t piece_input_bytes(size_t p) const {
        uint64_t bytes = 0;
        for (const plan_write & pw : plan_.writes[p])
            for (const plan_input_ref & r : pw.inputs) bytes += job_.pieces[p].n * r.elem_size;
        return bytes;
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
    merge_status compute(merge_thread_pool & pool, uint64_t w0, uint64_t w1, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last) {
        if (reduced_.empty()) reduced_.assign(job_.pieces.size(), false);
        for (size_t g0 = first; g0 < last;) {
            size_t g1 = g0;
            uint64_t bytes = 0;
            bool reduces = false;
            while (g1 < last) {
                const size_t p = spans[g1].piece;
                const uint64_t own = p == plan_literal ? 0 : piece_input_bytes(p);
                if (reuse_bytes_ > 0 && g1 > g0 && bytes + own > reuse_bytes_) break;
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
                merge_status s = reduce_piece(pool, p);
                t_reduce_ += now() - t0;
                if (!s.ok()) return s;
                reduced_[p] = true;
            }
            const uint64_t lo = g0 == first ? w0 : std::max(w0, spans[g0].begin), hi = g1 == last ? w1 : std::max(lo, std::min(w1, spans[g1].begin));
            merge_status s = write_group(pool, lo, hi, w0, buf, spans, g0, g1);
            if (!s.ok()) return s;
            g0 = g1;
        }
        return {};
    }

    /** Writes the elements of spans [first, last) that start in [lo, hi) (window w0's buffer). */
    merge_status write_group(merge_thread_pool & pool, uint64_t lo, uint64_t hi, uint64_t w0, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last) {
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
};

} // namespace

uint64_t merge_window_buffer_bytes(const merge_tuning & tuning, uint64_t max_output_bytes) { return window_bytes_for(tuning, max_output_bytes) + slack; }

merge_status merge_engine_run(const merge_job & job, merge_result * result) {
    try {
        merge_result r;
        merge_status s = engine(job, &r).run();
        if (s.ok()) *result = std::move(r);
        return s;
    } catch (const std::bad_alloc &) {
        return merge_status::fail(merge_error::INTERNAL, "out of memory");
    } catch (const std::exception & e) {
        return merge_status::fail(merge_error::INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return merge_status::fail(merge_error::INTERNAL, "internal error");
    }
}

