// Output window buffers faulted in before a job needs them. On the benchmark VM a fresh page
// costs a host fault (the guest returns freed memory to the host), and the first memset of the
// engine's two 32 MiB windows took 7-389 ms (bench/RESULTS.md, "LoRA bake: where the two threads
// wait"): inside the job that is on the critical path, in the compute threads' first windows.
// The TypeScript side asks for the buffers when it starts planning a job
// (prepareOutputBuffers in the binding); a libuv worker faults them in while the planning runs on
// the event loop, and the engine takes them from this pool. The pool is emptied at the end of
// every job, so no memory stays behind a finished job.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

/** A huge-page aligned buffer from merge_alloc_io_buffer, freed when the last owner lets go. */
struct merge_io_buffer {
    uint8_t * data = nullptr;
    uint64_t size = 0; // bytes asked for (the allocation is rounded up to 2 MiB)
    explicit merge_io_buffer(uint64_t bytes);
    ~merge_io_buffer();
    merge_io_buffer(const merge_io_buffer &) = delete;
    merge_io_buffer & operator=(const merge_io_buffer &) = delete;
};

/** Tops the pool up to `count` buffers of `bytes`; returns the new ones (to populate). Throws std::bad_alloc. */
std::vector<std::shared_ptr<merge_io_buffer>> merge_buffer_pool_add(uint64_t bytes, int count);

/** A pooled buffer of at least `bytes` and the same allocation (2 MiB steps: a narrowed window does not hold a big one), or null. */
std::shared_ptr<merge_io_buffer> merge_buffer_pool_take(uint64_t bytes);

/** Drops every pooled buffer (freed once no populate worker holds it). */
void merge_buffer_pool_clear();

/**
 * Faults in the buffers' pages for writing (MADV_POPULATE_WRITE; nothing on kernels before 5.14), in
 * 2 MiB steps taken from each buffer in turn: the order in which the engine's ramp windows
 * first touch them. Blocking: run it off the event loop.
 */
void merge_buffers_populate(const std::vector<std::shared_ptr<merge_io_buffer>> & buffers);

/** Bytes pooled now (tests). */
uint64_t merge_buffer_pool_bytes();
