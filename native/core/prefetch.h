// Read-ahead for the inputs: a helper thread that asks the kernel to start reading the byte
// ranges the next window will need, so compute threads rarely wait on the disk.
// It issues MADV_WILLNEED in steps of a few MiB because Linux caps one WILLNEED request at
// the readahead window (force_page_cache_ra reads at most max(io_pages, ra_pages) pages),
// so a single call over a 64 MiB range would only read its first few MiB.
// WILLNEED only fills the page cache; nothing is mapped into this process.
// merge_input_reader (below) replaces it on cold jobs with inputs bigger than half the RAM.
// A second prefetcher reads the inputs of pieces with statistics ahead of their statistics
// pass (engine_statistics_reads.cc queue_statistics_reads, TENSORMERGE_STATISTICS_READ), in one of the modes below.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "file_io.h"

struct prefetch_range {
    uint32_t file;
    uint64_t offset;
    uint64_t length;
    /** Populate mode with touch on: touch this range's lines (false: the run was all cached when its piece was queued). */
    bool touch = true;
};

/**
 * How a merge_prefetcher brings a range in. willneed: MADV_WILLNEED (page cache only; the
 * compute threads then fault each page into the map). populate: MADV_POPULATE_READ (Linux 5.14+;
 * reads the pages in and maps them, one call per step, so the compute threads take no page
 * faults; falls back to willneed for good where the kernel refuses it). pread: read() into a
 * small buffer of the thread's, thrown away (read()'s sequential read-ahead fills the page cache;
 * the compute threads still fault the pages into the map, minor faults only).
 */
enum class prefetch_mode { willneed, populate, pread };

class merge_prefetcher {
public:
    /** `threads` helper threads take the queue's steps in turn (so as many requests are in flight). */
    /**
     * `touch_stride` (populate mode; 0: no touch): after each step is populated, read one byte
     * every `touch_stride` bytes of it, so that the first read of data fresh from the disk, which
     * on the benchmark VM costs more than the later ones (bench/RESULTS.md "Statistics read
     * ahead"), is paid on this thread. That cost is per 4 KiB page, not per line (a page the VM's
     * host maps on its first access): one load per page pays all of it, and the compute threads'
     * later reads of the page cost what a second read does (bench/RESULTS.md "The touch, one
     * load per page"); a load per 64-byte line also pulled every line through the caches, from
     * which it was evicted long before the statistics pass read it.
     * Ranges queued with `touch` false (their run was wholly cached when its piece was queued) are not touched.
     */
    /**
     * `touch_thread` (populate mode with a touch stride): the touch runs on a thread of its own,
     * fed the populated steps in order, so the populating threads go straight on to the next
     * step's read instead of leaving the disk idle while they touch (bench/RESULTS.md
     * "Statistics read: the touch on its own thread"). At most `touch_lag_steps` steps wait for
     * it; a step populated while that many wait is touched by its populating thread, as
     * without the touch thread. A step whose pages are no longer all cached when its turn comes
     * (dropped behind, or evicted) is not touched: the touch would read it again from the disk.
     */
    explicit merge_prefetcher(const std::vector<std::unique_ptr<merge_input_map>> & inputs, prefetch_mode mode = prefetch_mode::willneed, unsigned threads = 1, uint32_t touch_stride = 0,
                              bool touch_thread = false)
        : inputs_(inputs), n_threads_(threads < 1 ? 1 : threads), touch_stride_(touch_stride), touch_thread_(touch_thread && touch_stride != 0 && mode == prefetch_mode::populate),
          mode_((int) mode) {}
    ~merge_prefetcher() { stop(); }
    merge_prefetcher(const merge_prefetcher &) = delete;
    merge_prefetcher & operator=(const merge_prefetcher &) = delete;

    /** Starts the threads; throws std::system_error. */
    void start();
    /** Queues ranges (advice only: errors are ignored, order is kept). */
    void submit(std::vector<prefetch_range> ranges);
    /** Drops what is queued and joins. Idempotent. */
    void stop();
    /** Bytes of the ranges taken from the queue (after stop()). */
    uint64_t bytes_ahead() const { return bytes_ahead_.load(); }
    /** Bytes of the populated steps that were touched (after stop()). */
    uint64_t bytes_touched() const { return bytes_touched_.load(); }
    /** Whether populated steps are touched (the constructor's `touch_stride` is not 0). */
    bool touches() const { return touch_stride_ != 0; }
    /** Whether the touch runs on its own thread (the constructor's `touch_thread`, in populate mode with a touch). */
    bool touch_thread() const { return touch_thread_; }
    /** Bytes of populated steps the touch thread skipped: no longer all cached at their turn (after stop()). */
    uint64_t bytes_touch_skipped() const { return bytes_touch_skipped_.load(); }
    /** Most steps the touch thread lets wait before populating threads touch their own steps again. */
    static constexpr size_t touch_lag_steps = 16;
    /** Bytes between two touched bytes (0: no touch). */
    uint32_t touch_stride() const { return touch_stride_; }
    /** The mode in effect: populate turns willneed if the kernel refused MADV_POPULATE_READ (after stop()). */
    prefetch_mode mode() const { return (prefetch_mode) mode_.load(); }

private:
    void loop();
    /** The touch thread's loop (touch_thread_): touches the populated steps handed to it, in order. */
    void touch_loop();
    void bring_in(const prefetch_range & r, uint8_t * buffer);
    /** Reads one byte every touch_stride_ bytes of the mapped range (under the SIGBUS guard). */
    void touch(const merge_input_map & in, const prefetch_range & r);
    /** Fraction of the pages of the file's [offset, offset+length) that were cached at the snapshot (1 if unknown). */
    double was_resident(uint32_t file, uint64_t offset, uint64_t length) const;

    const std::vector<std::unique_ptr<merge_input_map>> & inputs_;
    const unsigned n_threads_;
    const uint32_t touch_stride_;
    const bool touch_thread_;
    std::vector<std::thread> threads_;
    std::thread toucher_;
    std::condition_variable touch_cv_;        // under mutex_
    std::deque<prefetch_range> touch_queue_;  // populated steps waiting for the touch thread
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<prefetch_range> queue_;
    bool stop_ = false;
    std::atomic<int> mode_;                // a prefetch_mode
    std::atomic<uint64_t> bytes_ahead_{0};
    std::atomic<uint64_t> bytes_touched_{0};
    std::atomic<uint64_t> bytes_touch_skipped_{0};
};

/**
 * Input runs of one window copied into memory with read(): the compute threads read them here
 * instead of through the map. On a cold cache this is the cheap way in (bench/RESULTS.md,
 * "Cold reads"): with inputs bigger than half the RAM (drop-behind), faulting fresh page-cache
 * pages into a map after MADV_WILLNEED read-ahead cost seconds of system CPU per 10 GB on the
 * benchmark VM; read() into huge-page buffers, dropping each piece once copied, costs less.
 */
struct staged_run {
    uint32_t file;
    uint64_t offset, length; // file bytes [offset, offset+length)
    const uint8_t * data;    // their copy; data's address is offset's modulo 4096 (same alignment as the map)
    bool cold;               // mostly not in the page cache at the reader's snapshot (drop-behind candidate)
    bool direct;             // read with O_DIRECT (unless its file was refused since: merge_input_map::reads_direct)
};

struct staged_window {
    std::vector<staged_run> runs; // sorted by (file, offset), non-overlapping

    /** The copy of file bytes [offset, offset+length) if one run holds all of them, else null. */
    const uint8_t * find(uint32_t file, uint64_t offset, uint64_t length) const {
        size_t lo = 0, hi = runs.size();
        while (lo < hi) { // first run after (file, offset)
            const size_t mid = (lo + hi) / 2;
            const staged_run & r = runs[mid];
            if (r.file < file || (r.file == file && r.offset <= offset)) lo = mid + 1;
            else hi = mid;
        }
        if (lo == 0) return nullptr;
        const staged_run & r = runs[lo - 1];
        if (r.file != file || offset - r.offset > r.length || length > r.length - (offset - r.offset)) return nullptr;
        return r.data + (offset - r.offset);
    }
};

/**
 * Reads windows' input runs into two page-aligned slots of `slot_bytes` each (window k uses
 * slot k % 2), on `n_threads` threads that share each window's reads in pieces of `piece_bytes`
 * (one pread each, so n_threads requests in flight), so the
 * next window is read while this one is computed. Runs that were mostly in the page cache when
 * the reader was made are left to the map (unless `all`), as are runs that no longer fit in
 * the slot: the slots bound this reader's memory at 2 x slot_bytes whatever the job.
 * Residency is judged from a snapshot taken then, not when a window is queued: by then the
 * kernel's readahead for the previous window's reads (8-16 MiB on the benchmark VM) has
 * already fetched most of it, and the snapshot also tells drop-behind which pages the merge
 * brought in (staged_run::cold).
 *
 * Direct reads (`direct`: 0 never, 1 cold runs, 2 every run it reads, 3 as 2 with each file's
 * direct reads refused, for tests: merge_input_map::refuse_direct_reads_for_tests): a run is read with
 * O_DIRECT from its offset rounded down to 4096 to its end rounded up, into the slot at the
 * address that already keeps offset modulo 4096 (the bytes before and after the run, up to the
 * page boundaries, belong to no other run), so the kernel DMAs into the slots: no page-cache
 * page is made, copied or dropped, the cheapest way in on the benchmark VM (bench/floor.c
 * "direct", bench/RESULTS.md "Direct reads"). Files whose filesystem refuses O_DIRECT (tmpfs)
 * are read buffered, counted in direct_fallbacks().
 */
class merge_input_reader {
public:
    merge_input_reader(const std::vector<std::unique_ptr<merge_input_map>> & inputs, const std::vector<std::string> & paths, uint64_t slot_bytes,
                       unsigned n_threads, bool all, bool drop_behind, int direct = 0, uint64_t piece_bytes = 4u << 20);
    ~merge_input_reader() { stop(); }
    merge_input_reader(const merge_input_reader &) = delete;
    merge_input_reader & operator=(const merge_input_reader &) = delete;

    /** The fraction of the input bytes not in the page cache when the reader was made. */
    double uncached_fraction() const;

    /** Allocates the slots and starts the threads; throws std::bad_alloc / std::system_error. */
    void start();
    /**
     * Queues window `id`'s runs (sorted, coalesced). Ids are submitted in increasing order, and
     * at most two windows are pending or in use: id - 2 must have been waited for.
     */
    void submit(uint64_t id, const std::vector<prefetch_range> & runs);
    /** Waits until window `id` is read; its runs, or the first read error of the job. */
    merge_status wait(uint64_t id, const staged_window ** window);
    /** Stops reading and joins. Idempotent. */
    void stop();

    /** Run bytes read into the slots, with buffered pread / with O_DIRECT (after stop()). */
    uint64_t bytes_buffered() const { return bytes_buffered_; }
    uint64_t bytes_direct() const { return bytes_direct_; }
    /** Inputs that were to be read direct but whose filesystem refused O_DIRECT (after stop()). */
    uint64_t direct_fallbacks() const;
    double seconds_reading() const { return seconds_reading_; }

private:
    struct piece {
        uint32_t file;
        uint64_t offset, length; // the bytes read: for a direct piece from a 4096-aligned offset
        uint8_t * dst;
        uint64_t run_bytes;      // of them, bytes inside the run (a direct piece also reads the page head before it)
        bool cold;
        bool direct;
    };
    struct pending {
        uint64_t id;
        staged_window window;
        std::vector<piece> pieces;
        size_t next = 0, done = 0;
    };
    void loop();
    /** Fraction of the pages of the file's [offset, offset+length) that were cached at the snapshot (1 if unknown). */
    double was_resident(uint32_t file, uint64_t offset, uint64_t length) const;

    const std::vector<std::unique_ptr<merge_input_map>> & inputs_;
    const std::vector<std::string> & paths_;
    const uint64_t slot_bytes_;
    const unsigned n_threads_;
    const uint64_t piece_bytes_; // one pread (a multiple of 4096): the floor's chunk size order (bench/floor.c)
    const bool all_;
    const bool drop_behind_; // drop each cold piece from the page cache once copied (the floor's read technique)
    const int direct_;       // 0 never, 1 cold runs, 2 every run, 3 refused for tests (class comment)
    std::vector<bool> wants_direct_; // per input: open_direct was tried
    std::vector<std::vector<unsigned char>> resident_; // per input, per page: cached when the reader was made
    struct free_deleter {
        void operator()(uint8_t * p) const;
    };
    std::unique_ptr<uint8_t, free_deleter> slots_[2];
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable work_cv_, done_cv_;
    std::deque<pending> queue_; // submitted, oldest first (at most two)
    merge_status status_;       // first read error
    bool stop_ = false;
    uint64_t bytes_buffered_ = 0, bytes_direct_ = 0;
    double seconds_reading_ = 0; // summed over the reader threads
};
