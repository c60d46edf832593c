// The statistics hold (statistics_hold.h): an arena read into with O_DIRECT, used as a ring.
#include "statistics_hold.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace {

constexpr uint64_t hold_page = 4096;

uint64_t page_up(uint64_t n) { return (n + hold_page - 1) & ~(hold_page - 1); }

double hold_seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

} // namespace

void merge_statistics_hold::free_deleter::operator()(uint8_t * p) const { free(p); }

merge_statistics_hold::merge_statistics_hold(const std::vector<std::unique_ptr<merge_input_map>> & inputs, const std::vector<std::string> & paths, uint64_t budget,
                                             unsigned n_threads, uint64_t piece_bytes)
    : inputs_(inputs), paths_(paths), budget_(budget & ~(hold_page - 1)), n_threads_(n_threads < 1 ? 1 : n_threads),
      piece_bytes_(std::max<uint64_t>(hold_page, piece_bytes & ~(hold_page - 1))), tried_direct_(inputs.size(), false) {}

uint64_t merge_statistics_hold::bytes_for(const std::vector<prefetch_range> & runs) {
    uint64_t used = 0;
    for (const prefetch_range & r : runs) {
        if (r.length == 0) continue;
        used = page_up(used) + (r.offset & (hold_page - 1)) + r.length;
    }
    return page_up(used);
}

uint64_t merge_statistics_hold::place(uint64_t size) const {
    if (size > budget_) return UINT64_MAX;
    if (held_.empty()) return 0;
    const uint64_t tail = held_.front().begin;
    if (held_.back().begin >= tail) { // not wrapped: taken [tail, head_); free [head_, budget_) and [0, tail)
        if (budget_ - head_ >= size) return head_;
        return tail >= size ? 0 : UINT64_MAX;
    }
    return tail - head_ >= size ? head_ : UINT64_MAX; // wrapped: free [head_, tail)
}

uint64_t merge_statistics_hold::room() {
    if (alloc_failed_) return 0;
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_.empty()) return budget_;
    const uint64_t tail = held_.front().begin;
    if (held_.back().begin >= tail) return std::max(budget_ - head_, tail);
    return tail - head_;
}

bool merge_statistics_hold::submit(uint64_t id, const std::vector<prefetch_range> & runs) {
    const uint64_t size = bytes_for(runs);
    if (size == 0 || size > budget_ || alloc_failed_) return false;
    if (!arena_) { // the first piece: the arena and the threads (a warm job holds nothing and makes neither)
        arena_.reset(merge_alloc_io_buffer(budget_));
        if (!arena_) {
            alloc_failed_ = true;
            return false;
        }
        try {
            for (unsigned t = 0; t < n_threads_; t++) threads_.emplace_back(&merge_statistics_hold::loop, this);
        } catch (...) {
            stop();
            alloc_failed_ = true;
            return false;
        }
    }
    held h;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stop_) return false;
        h.begin = place(size);
    }
    if (h.begin == UINT64_MAX) return false;
    h.id = id;
    h.size = size;
    uint8_t * region = arena_.get() + h.begin;
    uint64_t used = 0;
    for (const prefetch_range & r : runs) {
        if (r.length == 0) continue;
        if (!tried_direct_[r.file]) { // before the file's first read (file_io.h open_direct)
            tried_direct_[r.file] = true;
            inputs_[r.file]->open_direct();
        }
        const uint64_t head = r.offset & (hold_page - 1), at = page_up(used) + head;
        h.copy.runs.push_back({r.file, r.offset, r.length, region + at, true, true});
        // Whole pages from the one holding r.offset: region + at - head is 4096-aligned; the last
        // read's tail up to its page boundary stays below the next run's page.
        const uint64_t begin = r.offset - head, end = r.offset + r.length;
        for (uint64_t p = begin; p < end; p += piece_bytes_) {
            const uint64_t n = std::min(piece_bytes_, end - p);
            h.reads.push_back({r.file, p, n, region + (at - head) + (p - begin), p == begin ? n - head : n});
        }
        used = at + r.length;
    }
    std::sort(h.copy.runs.begin(), h.copy.runs.end(), [](const staged_run & x, const staged_run & y) {
        return x.file != y.file ? x.file < y.file : x.offset < y.offset;
    });
    {
        std::lock_guard<std::mutex> lock(mutex_);
        head_ = h.begin + size;
        used_ += size;
        peak_ = std::max(peak_, used_);
        n_pieces_++;
        held_.push_back(std::move(h));
    }
    work_cv_.notify_all();
    return true;
}

merge_status merge_statistics_hold::wait(uint64_t id, staged_window * copy) {
    std::unique_lock<std::mutex> lock(mutex_);
    held * found = nullptr;
    done_cv_.wait(lock, [&] {
        if (!status_.ok() || stop_) return true;
        for (held & h : held_)
            if (h.id == id && !h.released) return h.done == h.reads.size() && (found = &h) != nullptr;
        return true; // not submitted: reported below
    });
    if (!status_.ok()) return status_;
    if (!found) return merge_status::fail(merge_error::INTERNAL, stop_ ? "the statistics hold stopped" : "a piece waited for was not held");
    *copy = found->copy;
    return {};
}

void merge_statistics_hold::release(uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (held & h : held_)
        if (h.id == id) h.released = true;
    while (!held_.empty() && held_.front().released) {
        used_ -= held_.front().size;
        held_.pop_front();
    }
    if (held_.empty()) head_ = 0;
}

void merge_statistics_hold::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    for (std::thread & t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

void merge_statistics_hold::loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        held * h = nullptr;
        work_cv_.wait(lock, [&] {
            if (stop_) return true;
            for (held & q : held_)
                if (q.next < q.reads.size()) return (h = &q) != nullptr;
            return false;
        });
        if (stop_) return;
        const read rd = h->reads[h->next++];
        const bool skip = !status_.ok(); // after a failure the job is over: mark the rest done
        lock.unlock();
        merge_status s;
        bool direct = false;
        const double t0 = hold_seconds();
        if (!skip) {
            s = inputs_[rd.file]->read_direct_at(paths_[rd.file], rd.offset, rd.length, rd.dst, &direct);
            // Read buffered (the file refused O_DIRECT): the fresh page-cache pages go at once.
            if (s.ok() && !direct) inputs_[rd.file]->drop_cached(rd.offset, rd.length);
        }
        const double dt = hold_seconds() - t0;
        lock.lock();
        seconds_reading_ += dt;
        if (!skip && s.ok()) (direct ? bytes_direct_ : bytes_buffered_) += rd.run_bytes;
        if (!s.ok() && status_.ok()) status_ = std::move(s);
        h->done++; // h stays valid: held_ drops only released pieces, which were waited for (all done)
        done_cv_.notify_all();
    }
}
