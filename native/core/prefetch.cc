#include "prefetch.h"

#include <sys/mman.h>

namespace {
constexpr uint64_t step = 4u << 20;
}

void merge_prefetcher::start() { thread_ = std::thread(&merge_prefetcher::loop, this); }

void merge_prefetcher::submit(std::vector<prefetch_range> ranges) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const prefetch_range & r : ranges) queue_.push_back(r);
    }
    cv_.notify_one();
}

void merge_prefetcher::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        queue_.clear();
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void merge_prefetcher::loop() {
    for (;;) {
        prefetch_range r;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
            if (stop_) return;
            r = queue_.front();
            // Take one step at a time so stop() is honoured quickly.
            const uint64_t n = r.length < step ? r.length : step;
            queue_.front().offset += n;
            queue_.front().length -= n;
            if (queue_.front().length == 0) queue_.pop_front();
            r.length = n;
        }
        inputs_[r.file]->advise(r.offset, r.length, MADV_WILLNEED);
    }
}
