#include "prefetch.h"

#include "fault_guard.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <new>

#include <sys/mman.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14 (older headers lack it; older kernels refuse it with EINVAL)
#endif

namespace {
constexpr uint64_t step = 4u << 20;
}

void merge_prefetcher::start() {
    for (unsigned t = 0; t < n_threads_; t++) threads_.emplace_back(&merge_prefetcher::loop, this);
    if (touch_thread_) toucher_ = std::thread(&merge_prefetcher::touch_loop, this);
}

void merge_prefetcher::submit(std::vector<prefetch_range> ranges) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const prefetch_range & r : ranges) queue_.push_back(r);
    }
    cv_.notify_all();
}

void merge_prefetcher::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;
        queue_.clear();
        touch_queue_.clear();
    }
    cv_.notify_all();
    touch_cv_.notify_all();
    for (std::thread & t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
    if (toucher_.joinable()) toucher_.join();
}

void merge_prefetcher::bring_in(const prefetch_range & r, uint8_t * buffer) {
    const merge_input_map & in = *inputs_[r.file];
    const prefetch_mode mode = (prefetch_mode) mode_.load(std::memory_order_relaxed);
    if (mode == prefetch_mode::populate) {
        // EINVAL: a kernel before 5.14 (no MADV_POPULATE_READ). Other errors (EFAULT for a file
        // truncated under the map, EINTR, ENOMEM) are left to the compute threads' own reads,
        // which fault under the SIGBUS guard and name the file.
        const bool touch_step = touch_stride_ != 0 && r.touch;
        if (in.advise(r.offset, r.length, MADV_POPULATE_READ) == 0) {
            if (touch_step && touch_thread_) {
                std::unique_lock<std::mutex> lock(mutex_);
                if (touch_queue_.size() < touch_lag_steps) {
                    touch_queue_.push_back(r);
                    lock.unlock();
                    touch_cv_.notify_one();
                    return;
                }
            }
            if (touch_step) {
                touch(in, r);
                bytes_touched_ += r.length;
            }
            return;
        }
        if (errno != EINVAL) return;
        mode_.store((int) prefetch_mode::willneed, std::memory_order_relaxed);
    }
    if (mode == prefetch_mode::pread && buffer) {
        for (uint64_t at = 0; at < r.length; at += step)
            if (!in.read_at(std::string(), r.offset + at, std::min(step, r.length - at), buffer).ok()) return; // advice only
        return;
    }
    in.advise(r.offset, r.length, MADV_WILLNEED);
}

void merge_prefetcher::touch(const merge_input_map & in, const prefetch_range & r) {
    if (!in.data() || r.length == 0 || r.offset >= in.size()) return;
    const uint64_t end = std::min<uint64_t>(in.size(), r.offset + r.length);
    const merge_fault_range range{(uintptr_t) in.data(), (uintptr_t) in.data() + in.mapped_length()};
    uintptr_t address = 0;
    // A file truncated under the map faults here: the touch stops, the compute threads' own
    // reads report it. One (volatile: kept) load per stride, from the stride boundary at or
    // below the range's start (a power of two: a page's or a line's first byte).
    const uint64_t stride = touch_stride_;
    merge_fault_run(&range, 1, &address, [&] {
        for (uint64_t at = r.offset & ~(stride - 1); at < end; at += stride) (void) *(const volatile uint8_t *) (in.data() + at);
    });
}

void merge_prefetcher::touch_loop() {
    for (;;) {
        prefetch_range r;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            touch_cv_.wait(lock, [&] { return stop_ || !touch_queue_.empty(); });
            if (stop_) return;
            r = touch_queue_.front();
            touch_queue_.pop_front();
        }
        const merge_input_map & in = *inputs_[r.file];
        // Dropped behind (or evicted) since it was populated: touching it would read it again.
        if (in.resident_fraction(r.offset, r.length) < 1.0) {
            bytes_touch_skipped_ += r.length;
            continue;
        }
        touch(in, r);
        bytes_touched_ += r.length;
    }
}

void merge_prefetcher::loop() {
    // The pread mode's buffer, thrown away after each read (allocated here: start() stays cheap).
    std::unique_ptr<uint8_t[]> buffer;
    if (mode_.load() == (int) prefetch_mode::pread) buffer.reset(new (std::nothrow) uint8_t[step]);
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
        bring_in(r, buffer.get());
        bytes_ahead_ += r.length;
    }
}

namespace {
constexpr uint64_t page = 4096;
double seconds_now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
} // namespace

void merge_input_reader::free_deleter::operator()(uint8_t * p) const { free(p); }

merge_input_reader::merge_input_reader(const std::vector<std::unique_ptr<merge_input_map>> & inputs, const std::vector<std::string> & paths,
                                       uint64_t slot_bytes, unsigned n_threads, bool all, bool drop_behind, int direct, uint64_t piece_bytes)
    : inputs_(inputs), paths_(paths), slot_bytes_((slot_bytes + page - 1) & ~(page - 1)), n_threads_(n_threads < 1 ? 1 : n_threads),
      piece_bytes_(std::max<uint64_t>(page, piece_bytes & ~(page - 1))), all_(all), drop_behind_(drop_behind), direct_(direct) {
    for (const auto & in : inputs_) resident_.push_back(in->resident_pages());
}

double merge_input_reader::uncached_fraction() const {
    double total = 0, missing = 0;
    for (size_t f = 0; f < inputs_.size(); f++) {
        const double size = (double) inputs_[f]->size();
        total += size;
        missing += (1.0 - was_resident((uint32_t) f, 0, inputs_[f]->size())) * size;
    }
    return total > 0 ? missing / total : 0.0;
}

double merge_input_reader::was_resident(uint32_t file, uint64_t offset, uint64_t length) const {
    const std::vector<unsigned char> & pages = resident_[file];
    if (pages.empty() || length == 0) return 1.0;
    const uint64_t first = offset / page, last = std::min<uint64_t>(pages.size(), (offset + length + page - 1) / page);
    if (first >= last) return 1.0;
    uint64_t n = 0;
    for (uint64_t i = first; i < last; i++) n += pages[i];
    return (double) n / (double) (last - first);
}

void merge_input_reader::start() {
    for (auto & slot : slots_) {
        slot.reset(merge_alloc_io_buffer(slot_bytes_));
        if (!slot) throw std::bad_alloc();
    }
    for (const auto & in : inputs_) {
        in->advise_sequential();
        // Only files with a byte to read direct: a warm input keeps its one descriptor.
        const bool want = direct_ >= 2 || (direct_ == 1 && was_resident((uint32_t) wants_direct_.size(), 0, in->size()) < 1.0);
        wants_direct_.push_back(want);
        if (want && in->open_direct() && direct_ == 3) in->refuse_direct_reads_for_tests(); // refused: reads stay buffered (direct_fallbacks)
    }
    for (unsigned t = 0; t < n_threads_; t++) threads_.emplace_back(&merge_input_reader::loop, this);
}

void merge_input_reader::submit(uint64_t id, const std::vector<prefetch_range> & runs) {
    pending w;
    w.id = id;
    uint8_t * slot = slots_[id % 2].get();
    uint64_t used = 0;
    for (const prefetch_range & r : runs) {
        if (r.length == 0) continue;
        const bool cold = was_resident(r.file, r.offset, r.length) < 0.5;
        if (!cold && !all_) continue; // cached: the map reads it without a disk access
        // Same address modulo 4096 as in the map: aligned F32 tensors stay aligned (read in place).
        const uint64_t at = ((used + page - 1) & ~(page - 1)) + (r.offset & (page - 1));
        if (at > slot_bytes_ || r.length > slot_bytes_ - at) continue; // the slot is full: the map reads the rest
        const bool direct = (direct_ >= 2 || (direct_ == 1 && cold)) && inputs_[r.file]->reads_direct();
        w.window.runs.push_back({r.file, r.offset, r.length, slot + at, cold, direct});
        if (direct) {
            // Whole pages from the one holding r.offset: slot + at - head is 4096-aligned.
            const uint64_t head = r.offset & (page - 1), begin = r.offset - head, end = r.offset + r.length;
            for (uint64_t p = begin; p < end; p += piece_bytes_) {
                const uint64_t n = std::min(piece_bytes_, end - p);
                w.pieces.push_back({r.file, p, n, slot + at - head + (p - begin), p == begin ? n - head : n, cold, true});
            }
        } else {
            for (uint64_t p = 0; p < r.length; p += piece_bytes_) {
                const uint64_t n = std::min(piece_bytes_, r.length - p);
                w.pieces.push_back({r.file, r.offset + p, n, slot + at + p, n, cold, false});
            }
        }
        used = at + r.length; // a direct read's tail up to the page boundary stays below the next run's page
    }
    {
        std::lock_guard<std::mutex> lock(mutex_);
        while (!queue_.empty() && queue_.front().id + 2 <= id) queue_.pop_front();
        queue_.push_back(std::move(w));
    }
    work_cv_.notify_all();
}

merge_status merge_input_reader::wait(uint64_t id, const staged_window ** window) {
    std::unique_lock<std::mutex> lock(mutex_);
    pending * found = nullptr;
    done_cv_.wait(lock, [&] {
        if (!status_.ok() || stop_) return true;
        for (pending & w : queue_)
            if (w.id == id && w.done == w.pieces.size()) return (found = &w) != nullptr;
        return false;
    });
    if (!status_.ok()) return status_;
    if (!found) return merge_status::fail(merge_error::INTERNAL, "the input reader stopped");
    *window = &found->window;
    return {};
}

void merge_input_reader::stop() {
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

uint64_t merge_input_reader::direct_fallbacks() const {
    uint64_t n = 0;
    for (size_t f = 0; f < wants_direct_.size(); f++) n += wants_direct_[f] && !inputs_[f]->reads_direct();
    return n;
}

void merge_input_reader::loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        pending * w = nullptr;
        work_cv_.wait(lock, [&] {
            if (stop_) return true;
            for (pending & q : queue_)
                if (q.next < q.pieces.size()) return (w = &q) != nullptr;
            return false;
        });
        if (stop_) return;
        const piece pc = w->pieces[w->next++];
        const bool skip = !status_.ok(); // after a failure the job is over: mark the rest done
        lock.unlock();
        merge_status s;
        bool direct = false;
        const double t0 = seconds_now();
        if (!skip) {
            if (pc.direct) s = inputs_[pc.file]->read_direct_at(paths_[pc.file], pc.offset, pc.length, pc.dst, &direct);
            else s = inputs_[pc.file]->read_at(paths_[pc.file], pc.offset, pc.length, pc.dst);
        }
        // The bytes are in the slot now: their page-cache pages can go at once. A small page
        // cache churn is what made the floor's read() cheap (bench/RESULTS.md, "Cold reads").
        // A direct read made no page-cache pages.
        if (!skip && s.ok() && !direct && pc.cold && drop_behind_) inputs_[pc.file]->drop_cached(pc.offset, pc.length);
        const double dt = seconds_now() - t0;
        lock.lock();
        seconds_reading_ += dt;
        if (!skip && s.ok()) (direct ? bytes_direct_ : bytes_buffered_) += pc.run_bytes;
        if (!s.ok() && status_.ok()) status_ = std::move(s);
        w->done++; // w stays valid: queue_ drops only windows already waited for and computed
        done_cv_.notify_all();
    }
}
