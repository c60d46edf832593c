// A fixed pool for the merge loop: `n_threads - 1` workers plus the calling thread (ith 0),
// so a job with threads = N keeps exactly N threads busy. One run() at a time, from the
// thread that created the pool; the callable must not throw (wrap it).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

class merge_thread_pool {
public:
    /** Starts the workers; throws std::system_error if a thread cannot be created. */
    explicit merge_thread_pool(unsigned n_threads);
    ~merge_thread_pool();

    merge_thread_pool(const merge_thread_pool &) = delete;
    merge_thread_pool & operator=(const merge_thread_pool &) = delete;

    unsigned size() const { return n_threads_; }

    /** Runs fn(ith) for ith in [0, size()) in parallel; returns when every call returned. */
    void run(const std::function<void(unsigned)> & fn);

private:
    void worker(unsigned ith);

    unsigned n_threads_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable start_cv_, done_cv_;
    const std::function<void(unsigned)> * fn_ = nullptr;
    unsigned long long generation_ = 0;
    unsigned pending_ = 0;
    bool stop_ = false;
};
