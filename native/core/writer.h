// The engine's I/O thread: takes finished windows in order, writes them with pwrite, reports
// progress in the control block, and fsyncs/closes each output after its last window. The compute threads meanwhile fill the
// other window buffer (double buffering). The first error stops it; later tasks are dropped.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "file_io.h"
#include "job.h"

struct writer_task {
    size_t output;
    const uint8_t * buf; // owned by the engine; must stay untouched until the task completes
    uint64_t offset;
    uint64_t length;
    bool last; // finish (fsync + close) the output after this
};

class merge_writer {
public:
    merge_writer(const merge_job & job, std::vector<std::unique_ptr<merge_output_file>> & outputs);
    ~merge_writer() { stop(); }
    merge_writer(const merge_writer &) = delete;
    merge_writer & operator=(const merge_writer &) = delete;

    /** Starts the thread; throws std::system_error. */
    void start();
    void submit(const writer_task & task);
    /** Waits until `count` tasks are done (written or dropped); false once the writer failed. */
    bool wait_completed(uint64_t count);
    /** Waits for every submitted task, then joins. */
    void drain();
    /** Drops pending tasks and joins. Idempotent. */
    void stop();

    bool failed();
    merge_status status();
    double seconds_writing() const { return t_write_; }
    double seconds_sync() const { return t_sync_; }
    /** When (steady clock, seconds) the first write started; 0 if none did. Read after drain/stop. */
    double first_write_at() const { return t_first_; }
    /** Time the thread waited for a window between its first task and its last. */
    double seconds_idle() const { return t_idle_; }

private:
    void loop();
    merge_status process(const writer_task & t);

    const merge_job & job_;
    std::vector<std::unique_ptr<merge_output_file>> & outputs_;
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_task_, cv_done_;
    std::deque<writer_task> queue_;
    uint64_t completed_ = 0;
    bool stop_ = false, draining_ = false, failed_ = false;
    merge_status status_;
    double bytes_done_ = 0;
    double t_write_ = 0, t_sync_ = 0;
    double t_first_ = 0, t_idle_ = 0;
};
