// Read-ahead for the inputs: a helper thread that asks the kernel to start reading the byte
// ranges the next window will need, so compute threads rarely wait on the disk.
// It issues MADV_WILLNEED in steps of a few MiB because Linux caps one WILLNEED request at
// the readahead window (force_page_cache_ra reads at most max(io_pages, ra_pages) pages),
// so a single call over a 64 MiB range would only read its first few MiB.
// WILLNEED only fills the page cache; nothing is mapped into this process.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "file_io.h"

struct prefetch_range {
    uint32_t file;
    uint64_t offset;
    uint64_t length;
};

class merge_prefetcher {
public:
    explicit merge_prefetcher(const std::vector<std::unique_ptr<merge_input_map>> & inputs) : inputs_(inputs) {}
    ~merge_prefetcher() { stop(); }
    merge_prefetcher(const merge_prefetcher &) = delete;
    merge_prefetcher & operator=(const merge_prefetcher &) = delete;

    /** Starts the thread; throws std::system_error. */
    void start();
    /** Queues ranges (advice only: errors are ignored, order is kept). */
    void submit(std::vector<prefetch_range> ranges);
    /** Drops what is queued and joins. Idempotent. */
    void stop();

private:
    void loop();

    const std::vector<std::unique_ptr<merge_input_map>> & inputs_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<prefetch_range> queue_;
    bool stop_ = false;
};
