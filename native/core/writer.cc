#include "writer.h"

#include <chrono>


namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
} // namespace

merge_writer::merge_writer(const merge_job & job, std::vector<std::unique_ptr<merge_output_file>> & outputs) : job_(job), outputs_(outputs) {}

void merge_writer::start() { thread_ = std::thread(&merge_writer::loop, this); }

void merge_writer::submit(const writer_task & task) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(task);
    }
    cv_task_.notify_one();
}

bool merge_writer::wait_completed(uint64_t count) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_done_.wait(lock, [&] { return completed_ >= count || failed_ || !thread_.joinable(); });
    return !failed_;
}

void merge_writer::drain() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        draining_ = true;
    }
    cv_task_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void merge_writer::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        queue_.clear();
    }
    cv_task_.notify_one();
    if (thread_.joinable()) thread_.join();
}

bool merge_writer::failed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failed_;
}

merge_status merge_writer::status() {
    std::lock_guard<std::mutex> lock(mutex_);
    return status_;
}

merge_status merge_writer::process(const writer_task & t) {
    if (t.length > 0) {
        const double t0 = now();
        if (t_first_ == 0) t_first_ = t0;
        merge_status s = outputs_[t.output]->write(t.buf, t.offset, t.length);
        t_write_ += now() - t0;
        if (!s.ok()) return s;
        bytes_done_ += (double) t.length;
        job_.control.set_done(bytes_done_);
    }
    if (t.last) {
        const double t0 = now();
        merge_status s = outputs_[t.output]->finish(job_.tuning.fsync != 0);
        t_sync_ += now() - t0;
        if (!s.ok()) return s;
    }
    return {};
}

void merge_writer::loop() {
    for (;;) {
        writer_task task;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            // Idle: waiting with nothing queued once writing began (not the wait for the first window).
            const double t0 = queue_.empty() && completed_ > 0 && !stop_ && !draining_ ? now() : 0;
            cv_task_.wait(lock, [&] { return stop_ || !queue_.empty() || draining_; });
            if (t0 > 0) t_idle_ += now() - t0;
            if (stop_ || (queue_.empty() && draining_)) break;
            task = queue_.front();
        }
        merge_status s;
        try {
            s = process(task);
        } catch (...) {
            s = merge_status::fail(merge_error::INTERNAL, "unexpected exception in the writer thread");
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!queue_.empty()) queue_.pop_front();
            completed_++;
            if (!s.ok() && !failed_) {
                failed_ = true;
                status_ = s;
                queue_.clear();
            }
        }
        cv_done_.notify_all();
        if (!s.ok()) break;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    cv_done_.notify_all();
}
