// Turns a SIGBUS on a mapped input into an error instead of a dead process.
//
// Reading a page of a MAP_SHARED file that another process truncated (or that the disk cannot
// read) raises SIGBUS on the reading thread; by default that kills the whole process, and with
// it a Node server that called merge(). The engine therefore runs every read of its input maps
// inside merge_fault_run(): a process-wide SIGBUS handler (installed once, chaining to the one
// it replaced) siglongjmp()s out of the read when, and only when, the faulting thread is inside
// such a run and the address lies in one of the ranges that run declared. Every other SIGBUS
// (another library's, a signal sent with kill) goes to the previous handler, or to the default
// action, exactly as if this handler did not exist.
//
// The handler takes no lock, allocates nothing and touches no thread_local (a dynamic TLS
// block may be allocated on first access): it finds the faulting thread's guard by its kernel
// thread id in a fixed table of slots. SIGSEGV is not handled: a truncated or unreadable file
// raises SIGBUS only, and a SIGSEGV in the engine is a bug that should crash loudly.
//
// What may run inside a guarded body: reads of the maps, arithmetic, memcpy, madvise. Nothing
// with a destructor, no lock, no allocation: the jump skips whatever the body was doing.
#pragma once

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <sys/types.h>

/** One byte range [begin, end) the guarded reads may fault in (a whole input map). */
struct merge_fault_range {
    uintptr_t begin;
    uintptr_t end;
};

/** A guard's state; owned by one thread while it is claimed. */
struct merge_fault_slot {
    std::atomic<pid_t> tid{0};        // the claiming thread's kernel id, 0 when free
    volatile sig_atomic_t armed = 0;  // jb is valid (set after sigsetjmp returned 0)
    const merge_fault_range * ranges = nullptr;
    size_t n_ranges = 0;
    volatile uintptr_t fault_address = 0;
    sigjmp_buf jb;
};

/**
 * Installs the SIGBUS handler, once per process (later calls return the first result).
 * False if sigaction failed: guarded runs then behave as unguarded ones.
 */
bool merge_fault_handler_install();

/** Claims a free slot for the calling thread; nullptr if all are taken. */
merge_fault_slot * merge_fault_claim(const merge_fault_range * ranges, size_t n_ranges);
void merge_fault_release(merge_fault_slot * slot);

/**
 * Unblocks SIGBUS in the calling thread for its lifetime and restores the previous mask after
 * (a synchronous SIGBUS on a thread that blocks it kills the process whatever the handler).
 * Threads started inside the scope inherit the unblocked mask.
 */
class merge_fault_thread_scope {
public:
    merge_fault_thread_scope();
    ~merge_fault_thread_scope();
    merge_fault_thread_scope(const merge_fault_thread_scope &) = delete;
    merge_fault_thread_scope & operator=(const merge_fault_thread_scope &) = delete;

private:
    sigset_t previous_;
    bool restore_ = false;
};

enum class merge_fault_outcome { ok, faulted, no_slot };

/**
 * Runs body(); if it faults on an address inside `ranges`, returns `faulted` with the address
 * in *address instead of letting the process die. `no_slot` (body not run) when more threads
 * than there are slots are guarded at once.
 */
template <class Body>
merge_fault_outcome merge_fault_run(const merge_fault_range * ranges, size_t n_ranges, uintptr_t * address, Body && body) {
    merge_fault_slot * const slot = merge_fault_claim(ranges, n_ranges);
    if (!slot) return merge_fault_outcome::no_slot;
    // savemask = 1: the handler runs with SIGBUS blocked; the jump must unblock it again.
    if (sigsetjmp(slot->jb, 1) != 0) {
        *address = slot->fault_address;
        merge_fault_release(slot);
        return merge_fault_outcome::faulted;
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);
    slot->armed = 1;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    try {
        body();
    } catch (...) {
        merge_fault_release(slot);
        throw;
    }
    merge_fault_release(slot);
    return merge_fault_outcome::ok;
}
