#include "thread_pool.h"

merge_thread_pool::merge_thread_pool(unsigned n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    try {
        for (unsigned i = 1; i < n_threads_; i++) threads_.emplace_back(&merge_thread_pool::worker, this, i);
    } catch (...) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        start_cv_.notify_all();
        for (std::thread & t : threads_) t.join();
        throw;
    }
}

merge_thread_pool::~merge_thread_pool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    start_cv_.notify_all();
    for (std::thread & t : threads_) t.join();
}

void merge_thread_pool::run(const std::function<void(unsigned)> & fn) {
    if (threads_.empty()) {
        fn(0);
        return;
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        fn_ = &fn;
        pending_ = (unsigned) threads_.size();
        generation_++;
    }
    start_cv_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
}

void merge_thread_pool::worker(unsigned ith) {
    unsigned long long seen = 0;
    for (;;) {
        const std::function<void(unsigned)> * fn;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            fn = fn_;
        }
        (*fn)(ith);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (--pending_ == 0) done_cv_.notify_one();
        }
    }
}
