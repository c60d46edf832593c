// The statistics hold (TENSORMERGE_STATISTICS_HOLD_MIB): the inputs of a piece with statistics
// (TIES, DARE-TIES, SLERP, model stock, cosine) read with O_DIRECT into private memory held
// from its statistics pass until its output pass is done with it, so both passes read them
// there and no page-cache page is made (on a VM each fresh page-cache page costs a host
// fault). Used by the engine when the job bypasses the page cache and does not drop behind
// (engine_statistics_hold.cc hold_piece, settle_held); a piece bigger than the room is held in
// part, and one that finds no room keeps the map path (the statistics read, prefetch.h).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "file_io.h"
#include "prefetch.h"

/**
 * One arena of `budget` bytes (allocated once, reused: its pages are faulted in once per job),
 * used as a ring: pieces take a contiguous region each, in the order they are submitted, and
 * give it back when released; the arena bounds the hold's memory at `budget` whatever the model.
 * Each piece's runs are read by `n_threads` threads in pieces of `piece_bytes` (one pread each,
 * so n_threads requests in flight), from the run's offset rounded down to 4096 into the region at
 * the address that keeps offset modulo 4096 (prefetch.h merge_input_reader's layout, so aligned
 * F32 tensors stay aligned). A file that refuses O_DIRECT is read buffered (read_direct_at) and
 * its fresh pages dropped once copied.
 */
class merge_statistics_hold {
public:
    merge_statistics_hold(const std::vector<std::unique_ptr<merge_input_map>> & inputs, const std::vector<std::string> & paths, uint64_t budget,
                          unsigned n_threads = 4, uint64_t piece_bytes = 4u << 20);
    ~merge_statistics_hold() { stop(); }
    merge_statistics_hold(const merge_statistics_hold &) = delete;
    merge_statistics_hold & operator=(const merge_statistics_hold &) = delete;

    /** The arena bytes `runs` (sorted, coalesced) take. */
    static uint64_t bytes_for(const std::vector<prefetch_range> & runs);
    /** Whether `runs` could ever be held (bytes_for <= the budget). */
    bool could_hold(const std::vector<prefetch_range> & runs) const { return bytes_for(runs) <= budget_; }
    /** The biggest region submit could take now (0 if the arena could not be allocated). Engine thread. */
    uint64_t room();

    /**
     * Takes room for piece `id`'s runs (sorted, coalesced) in the arena and queues their reads;
     * false (nothing queued) if the arena has no room for them now, or could not be allocated.
     * Engine thread only (so what is held depends on the job, never on timing).
     */
    bool submit(uint64_t id, const std::vector<prefetch_range> & runs);
    /** Waits until piece `id` (submitted) is read: its copy, or the first read error of the job. */
    merge_status wait(uint64_t id, staged_window * copy);
    /** Gives piece `id`'s room back (after its output pass; its reads must have been waited for). */
    void release(uint64_t id);
    /** Stops reading and joins. Idempotent. */
    void stop();

    /** Run bytes read into the arena (all pieces), with O_DIRECT / buffered. */
    uint64_t bytes_direct() const { return bytes_direct_; }
    uint64_t bytes_buffered() const { return bytes_buffered_; }
    /** Pieces submitted, and the most arena bytes taken at once. */
    uint64_t pieces() const { return n_pieces_; }
    uint64_t peak_bytes() const { return peak_; }
    uint64_t budget() const { return budget_; }
    double seconds_reading() const { return seconds_reading_; }

private:
    struct read {
        uint32_t file;
        uint64_t offset, length; // for a direct read from a 4096-aligned offset
        uint8_t * dst;
        uint64_t run_bytes; // bytes inside the run
    };
    struct held {
        uint64_t id;
        uint64_t begin, size; // arena region
        staged_window copy;
        std::vector<read> reads;
        size_t next = 0, done = 0;
        bool released = false;
    };
    void loop();
    /** Where `size` bytes fit in the ring now, or UINT64_MAX. mutex_ held. */
    uint64_t place(uint64_t size) const;

    const std::vector<std::unique_ptr<merge_input_map>> & inputs_;
    const std::vector<std::string> & paths_;
    const uint64_t budget_;
    const unsigned n_threads_;
    const uint64_t piece_bytes_;
    struct free_deleter {
        void operator()(uint8_t * p) const;
    };
    std::unique_ptr<uint8_t, free_deleter> arena_;
    bool alloc_failed_ = false;
    std::vector<bool> tried_direct_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable work_cv_, done_cv_;
    std::deque<held> held_; // submitted, not released, oldest first (released ones stay until they are the oldest)
    uint64_t head_ = 0;     // next free arena byte after the newest region
    uint64_t used_ = 0;     // arena bytes of the regions in held_
    merge_status status_;
    bool stop_ = false;
    uint64_t bytes_direct_ = 0, bytes_buffered_ = 0, n_pieces_ = 0, peak_ = 0;
    double seconds_reading_ = 0;
};
