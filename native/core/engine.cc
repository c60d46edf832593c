// The engine's entry point (engine.h) and engine::run (engine_internal.h): one job from its
// validation to its result, and the output window buffers.
#include "engine.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "cpu.h"
#include "engine_internal.h"
#include "writer.h"

namespace {

/** Output bytes per window: tuning.window_bytes in pages, at most the largest output (in pages). */
uint64_t window_bytes_for(const merge_tuning & tuning, uint64_t max_output_bytes) {
    uint64_t w = std::max<uint64_t>(page, tuning.window_bytes & ~(page - 1));
    w = std::min(w, (max_output_bytes + page - 1) & ~(page - 1));
    return w == 0 ? page : w;
}

} // namespace

merge_status engine::run() {
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
    start_statistics_hold();
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
    set_reduction_options();
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
    ctx_.held = &held_window_;
    // TENSORMERGE_TASK_MERGE_FUSED=0: TIES's output pass on fp16 / bf16 inputs through scratch slots
    // (widened, merged, stored), not the fused kernel (exec.h fused_task_merge); the same bits.
    if (const char * v = std::getenv("TENSORMERGE_TASK_MERGE_FUSED")) ctx_.fused_task_merge = std::atol(v) != 0;
    if (const char * v = std::getenv("TENSORMERGE_SLERP_FUSED")) ctx_.fused_slerp = std::atol(v) != 0; // the same for SLERP → fp16 (exec.h fused_slerp)

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
    // TENSORMERGE_STATISTICS_TOUCH_THREAD=1: the touch on a thread of its own, so the populate
    // never waits for it (prefetch.h merge_prefetcher); 0: each helper touches what it populated.
    bool statistics_touch_thread = false;
    if (const char * v = std::getenv("TENSORMERGE_STATISTICS_TOUCH_THREAD")) statistics_touch_thread = std::atoi(v) != 0;
    merge_prefetcher statistics_ahead(inputs_, statistics_read_ == 2 ? prefetch_mode::willneed : statistics_read_ == 3 ? prefetch_mode::pread : prefetch_mode::populate,
                                      statistics_readers, statistics_touch_stride, statistics_touch_thread);
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
    if (hold_) hold_->stop();
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
    uint64_t task_merge_fused = 0, slerp_fused = 0;
    for (const auto & sc : scratch_) {
        for (size_t o = 0; o < job_.outputs.size(); o++) {
            result_->nonfinite[o].nan += sc->nonfinite()[o].nan;
            result_->nonfinite[o].inf += sc->nonfinite()[o].inf;
        }
        task_merge_fused += sc->fused_elements();
        slerp_fused += sc->slerp_fused_elements();
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
        {"slerpFusedElements", (double) slerp_fused},
        {"statisticsRead", (double) (statistics_read_ > 0 && statistics_ahead.mode() == prefetch_mode::willneed ? 2 : statistics_read_)},
        {"bytesStatisticsAhead", (double) statistics_ahead.bytes_ahead()},
        {"bytesStatisticsTouched", (double) statistics_ahead.bytes_touched()},
        {"statisticsAheadBudget", (double) statistics_ahead_budget_},
        {"statisticsTouch", statistics_read_ == 1 && statistics_ahead.touches() ? 1.0 : 0.0},
        {"statisticsTouchStride", statistics_read_ == 1 ? (double) statistics_ahead.touch_stride() : 0.0},
        {"statisticsTouchThread", statistics_read_ == 1 && statistics_ahead.touch_thread() ? 1.0 : 0.0},
        {"bytesStatisticsTouchSkipped", (double) statistics_ahead.bytes_touch_skipped()},
        {"statisticsAheadPeak", (double) statistics_ahead_peak_},
        {"mapSequential", map_sequential() ? 1.0 : 0.0},
        // The statistics hold (statistics_hold.h): input bytes read into it (direct or, where refused, buffered), pieces, arena.
        {"statisticsHeldBytes", hold_ ? (double) (hold_->bytes_direct() + hold_->bytes_buffered()) : 0.0},
        {"statisticsHeldDirectBytes", hold_ ? (double) hold_->bytes_direct() : 0.0},
        {"statisticsHeldPieces", hold_ ? (double) hold_->pieces() : 0.0},
        {"statisticsHoldBudget", hold_ ? (double) hold_->budget() : 0.0},
        {"statisticsHoldPeak", hold_ ? (double) hold_->peak_bytes() : 0.0},
        {"secondsStatisticsHoldReading", hold_ ? hold_->seconds_reading() : 0.0},
        // Input bytes of pieces with statistics the hold left to the map, by why (engine_statistics_hold.cc).
        {"statisticsHoldMissOtherBytes", (double) hold_miss_other_},
        {"statisticsHoldMissCachedBytes", (double) hold_miss_cached_},
        {"statisticsHoldMissRoomBytes", (double) hold_miss_room_},
        {"statisticsHoldRestBytes", (double) hold_rest_bytes_},
    };
    return {};
}

uint64_t engine::direct_bytes() const {
    uint64_t n = 0;
    for (const auto & out : outputs_) n += out->direct_bytes();
    return n;
}

/** The error for a SIGBUS at `address`, which lies in one of the input maps. */
merge_status engine::fault_status(uintptr_t address) const {
    for (size_t i = 0; i < inputs_.size(); i++) {
        const uintptr_t base = (uintptr_t) inputs_[i]->data();
        if (base != 0 && address >= base && address - base < inputs_[i]->mapped_length())
            return inputs_[i]->fault_status(job_.inputs[i].path, address - base);
    }
    return merge_status::fail(merge_error::IO_ERROR, "a read of an input failed (SIGBUS)");
}

/**
 * The output window buffers: those the job's preparation faulted in (buffer_pool.h) where
 * their size fits this job's window, fresh ones (huge pages where the kernel allows) for the rest.
 */
void engine::take_buffers(int n_buffers) {
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
void engine::set_ramp() {
    for (const merge_output & out : job_.outputs) total_out_ += out.size;
    ramp_ = std::min(window_, job_.tuning.ramp_bytes & ~(page - 1));
    if (ramp_ >= window_) ramp_ = 0;
}

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
