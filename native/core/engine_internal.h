// The engine's class, shared by its translation units (not part of the core's interface: the
// binding and the tests call merge_engine_run, engine.h). One engine runs one job, on the
// thread that called merge_engine_run; its members are only touched from that thread, except
// what run_items hands to the pool threads for one pool run. Its parts, by file:
//   engine.cc                   run(): opens the files, sets the job's tuning, starts the helper
//                               threads, collects the result and its statistics; the buffers
//   engine_stream.cc            stream(): the window loop (which output next, where a window
//                               ends), and what each window gets: fill, CRC, compute in groups
//   engine_reads.cc             the inputs of a window: its runs, the reader, read-ahead,
//                               release and drop-behind, and whether those apply to the job
//   engine_statistics_reads.cc  the statistics read: the inputs of pieces with statistics,
//                               brought in by a helper thread ahead of their statistics pass
//   engine_statistics_hold.cc   the statistics hold: pieces with statistics read with O_DIRECT
//                               into private memory held from their statistics pass to their output
//   engine_reduce.cc            per-piece reductions (reductions.h) on the pool
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "buffer_pool.h"
#include "exec.h"
#include "fault_guard.h"
#include "file_io.h"
#include "job.h"
#include "pair_table.h"
#include "plan.h"
#include "prefetch.h"
#include "reductions.h"
#include "statistics_hold.h"
#include "thread_pool.h"

class merge_writer;

constexpr uint64_t page = 4096;
constexpr uint64_t slack = 64;          // > the largest element (8 bytes): room for the element that straddles a window's end
constexpr uint64_t chunk_bytes = 1u << 20; // output bytes per work item (cancel granularity)

inline double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

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

    merge_status run();

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
    // Per piece: 0 not queued for the statistics read, 1 queued (mostly cached), 2 queued cold (drop-behind), 3 held (statistics_hold.h)
    std::vector<uint8_t> statistics_queued_;
    // The statistics hold (statistics_hold.h, engine_statistics_hold.cc); null: every piece takes the map path.
    std::unique_ptr<merge_statistics_hold> hold_;
    // waiting: cold and one write, not submitted yet (no room, or bigger than the arena): decided
    // when the arena has room, at the latest at its statistics pass (wait_held).
    enum : uint8_t { hold_undecided, hold_waiting, hold_submitted, hold_ready, hold_map };
    std::vector<uint8_t> hold_state_;        // per piece
    bool hold_blocked_ = false;              // in this queue_statistics_reads pass a piece waits: none after it is submitted (the ring's order is the output order)
    // Input bytes of pieces with statistics not held, by why: too big or with several writes / mostly cached /
    // no room at their statistics pass; and the part of partly held pieces left to the map.
    uint64_t hold_miss_other_ = 0, hold_miss_cached_ = 0, hold_miss_room_ = 0, hold_rest_bytes_ = 0;
    std::vector<staged_window> hold_copies_; // per piece: its copy while ready
    staged_window held_window_;              // the ready pieces' copies (exec_context::held)
    bool drop_behind_ = false;
    struct window_drop {
        uint64_t w0;
        std::vector<prefetch_range> cold;
    };
    std::deque<window_drop> pending_drops_; // windows noted, not yet computed
    double t_compute_ = 0, t_fill_ = 0, t_wait_ = 0, t_crc_ = 0;
    std::vector<std::vector<uint32_t>> crc_; // running CRC per output and range

    static merge_status aborted() { return merge_status::fail(merge_error::ABORTED, "the merge was cancelled"); }

    // engine.cc
    uint64_t direct_bytes() const;
    merge_status fault_status(uintptr_t address) const;
    void take_buffers(int n_buffers);
    void set_ramp();

    // engine_stream.cc
    /** Where one output's stream stands: its next window, and the bytes carried into it. */
    struct output_cursor {
        uint64_t w0 = 0;
        size_t first = 0;      // first span that ends after w0
        uint8_t carry[slack];  // bytes of an element that started in the previous window and spilled past it
    };
    size_t position(size_t o, output_cursor & cur) const;
    size_t next_output(std::vector<output_cursor> & cursors) const;
    uint64_t window_end(size_t o, uint64_t w0, uint64_t done) const;
    merge_status stream(merge_thread_pool & pool, merge_writer & writer, merge_prefetcher & prefetcher);
    void fill(size_t o, uint64_t w0, uint64_t w1, uint8_t * buf, size_t first, size_t last);
    void crc_window(merge_thread_pool & pool, size_t o, uint64_t w0, uint64_t w1, const uint8_t * buf);
    merge_status compute(merge_thread_pool & pool, size_t o, uint64_t w0, uint64_t w1, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last);
    merge_status write_group(merge_thread_pool & pool, uint64_t lo, uint64_t hi, uint64_t w0, uint8_t * buf, const std::vector<plan_span> & spans, size_t first, size_t last);

    // engine_reads.cc
    /** Which pieces' inputs window_inputs lists. */
    enum class runs_of {
        all,
        not_read_ahead,  // without the pieces the statistics read brings in (the reader's share)
        cold_read_ahead, // only those of them that were not cached (drop_statistics_runs)
    };
    bool lists(size_t p, runs_of which) const;
    std::vector<prefetch_range> window_inputs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which = runs_of::all);
    bool wants_drop_behind() const;
    bool inputs_read_once() const;
    static std::vector<prefetch_range> sorted_coalesced(std::vector<prefetch_range> ranges);
    std::vector<prefetch_range> window_runs(size_t o, uint64_t w0, uint64_t w1, size_t first, runs_of which = runs_of::all);
    bool bypass_cache() const;
    void start_reader();
    bool reader_has_work() const;
    merge_status read_window(const std::vector<output_cursor> & cursors, size_t o, uint64_t w0, uint64_t w1, size_t first);
    void drop_read_runs();
    void plan_window_reads(size_t o, uint64_t w0, uint64_t w1, size_t first, merge_prefetcher * prefetcher);
    void release_window(size_t o, uint64_t w0, uint64_t w1, size_t first);
    void drop_window(uint64_t w0);

    // engine_statistics_reads.cc
    int statistics_read_mode() const;
    bool map_sequential() const;
    std::vector<prefetch_range> piece_input_runs(size_t p) const;
    void queue_statistics_reads(size_t o, uint64_t w0, size_t first);
    void queue_statistics_populate(size_t p, const std::vector<prefetch_range> & runs);
    uint64_t span_inputs_left(const plan_span & sp, uint64_t w0) const;
    static uint64_t statistics_ahead_budget_for();
    void drop_statistics_runs(size_t o, uint64_t w0, uint64_t w1, size_t first);

    // engine_statistics_hold.cc
    enum class hold_answer { held, map, later };
    uint64_t statistics_hold_budget() const;
    void start_statistics_hold();
    hold_answer hold_piece(size_t p);
    void settle_held(size_t p);
    merge_status wait_held(size_t p);
    bool release_held(size_t o, uint64_t w1, size_t first, size_t last);
    bool hold_waits(size_t p) const { return hold_ && hold_state_[p] == hold_waiting; }

    // engine_reduce.cc
    void set_reduction_options();
    merge_status reduce_piece(merge_thread_pool & pool, size_t p);
    reduction_options piece_reduction_options(size_t p) const;
    uint64_t piece_input_bytes(size_t p) const;

    // Here, since both engine_stream.cc (write_group) and engine_reduce.cc (reduce_piece) instantiate it.
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
};
