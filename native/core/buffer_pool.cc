#include "buffer_pool.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <sys/mman.h>

#include "file_io.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 // Linux 5.14
#endif

namespace {
constexpr uint64_t huge = 2u << 20;
uint64_t rounded(uint64_t bytes) { return (bytes + huge - 1) & ~(huge - 1); } // what merge_alloc_io_buffer allocates
std::mutex pool_mutex;
std::vector<std::shared_ptr<merge_io_buffer>> pool;
} // namespace

merge_io_buffer::merge_io_buffer(uint64_t bytes) : size(bytes) {
    data = merge_alloc_io_buffer(bytes);
    if (!data) throw std::bad_alloc();
}

merge_io_buffer::~merge_io_buffer() { free(data); }

std::vector<std::shared_ptr<merge_io_buffer>> merge_buffer_pool_add(uint64_t bytes, int count) {
    int have = 0; // prepared twice before a job (or for two jobs at once): never more than one job's worth
    {
        std::lock_guard<std::mutex> lock(pool_mutex);
        for (const auto & b : pool) have += b->size == bytes;
    }
    std::vector<std::shared_ptr<merge_io_buffer>> made;
    for (int i = have; i < count; i++) made.push_back(std::make_shared<merge_io_buffer>(bytes));
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.insert(pool.end(), made.begin(), made.end());
    return made;
}

std::shared_ptr<merge_io_buffer> merge_buffer_pool_take(uint64_t bytes) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    for (size_t i = 0; i < pool.size(); i++)
        if (pool[i]->size >= bytes && rounded(pool[i]->size) == rounded(bytes)) {
            std::shared_ptr<merge_io_buffer> b = pool[i];
            pool.erase(pool.begin() + (long) i);
            return b;
        }
    return nullptr;
}

void merge_buffer_pool_clear() {
    std::vector<std::shared_ptr<merge_io_buffer>> dropped;
    {
        std::lock_guard<std::mutex> lock(pool_mutex);
        dropped.swap(pool);
    }
    // freed here, outside the lock
}

uint64_t merge_buffer_pool_bytes() {
    std::lock_guard<std::mutex> lock(pool_mutex);
    uint64_t n = 0;
    for (const auto & b : pool) n += b->size;
    return n;
}

void merge_buffers_populate(const std::vector<std::shared_ptr<merge_io_buffer>> & buffers) {
    uint64_t longest = 0;
    for (const auto & b : buffers) longest = std::max(longest, b->size);
    for (uint64_t at = 0; at < longest; at += huge)
        for (const auto & b : buffers) {
            if (at >= b->size) continue;
            const uint64_t len = std::min(huge, ((b->size + 4095) & ~(uint64_t) 4095) - at); // not the rounding's tail: the engine never touches it
            // Not a write: the engine may already be filling this buffer. Kernels before 5.14
            // refuse the advice (EINVAL): the engine then faults the pages in itself, as before.
            if (madvise(b->data + at, (size_t) len, MADV_POPULATE_WRITE) != 0) return;
        }
}
