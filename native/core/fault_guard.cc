#include "fault_guard.h"

#include <cerrno>
#include <mutex>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace {

// Slots guarded at once: a job has at most 1024 threads (job.cc) and a host rarely runs more
// than a few jobs at a time (libuv's pool has 4 threads by default).
constexpr size_t n_slots = 4096;
merge_fault_slot slots[n_slots];

struct sigaction previous_action;
bool installed = false;
std::once_flag install_once;

pid_t kernel_tid() { return (pid_t) syscall(SYS_gettid); }

thread_local pid_t cached_tid = 0; // outside the handler only

/** Hands the signal to whoever had it before, as if this handler were not installed. */
void chain(int sig, siginfo_t * info, void * context) {
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction) {
            previous_action.sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != SIG_IGN) {
        previous_action.sa_handler(sig);
        return;
    }
    // Default action (SIG_IGN cannot stop a synchronous SIGBUS either: the kernel forces it).
    // Restore it: a fault re-executes the instruction and dies of SIGBUS as it always did; a
    // signal sent by kill() is raised again, delivered when this handler returns.
    struct sigaction dfl = {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, nullptr);
    if (info == nullptr || info->si_code <= 0) raise(sig);
}

void on_sigbus(int sig, siginfo_t * info, void * context) {
    const int saved_errno = errno;
    if (info != nullptr && info->si_code > 0) { // raised by the kernel for this thread's access
        const uintptr_t address = (uintptr_t) info->si_addr;
        const pid_t tid = kernel_tid();
        for (size_t i = 0; i < n_slots; i++) {
            merge_fault_slot & s = slots[i];
            if (s.tid.load(std::memory_order_relaxed) != tid) continue;
            // Only this thread writes its claimed slot: program order is enough.
            if (!s.armed) break;
            for (size_t r = 0; r < s.n_ranges; r++) {
                if (address >= s.ranges[r].begin && address < s.ranges[r].end) {
                    s.fault_address = address;
                    s.armed = 0;
                    errno = saved_errno;
                    siglongjmp(s.jb, 1);
                }
            }
            break;
        }
    }
    errno = saved_errno;
    chain(sig, info, context);
}

} // namespace

bool merge_fault_handler_install() {
    std::call_once(install_once, [] {
        struct sigaction action = {};
        action.sa_sigaction = on_sigbus;
        // SA_ONSTACK: use the thread's alternate stack if it has one (Node's main thread may).
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        installed = sigaction(SIGBUS, &action, &previous_action) == 0;
    });
    return installed;
}

merge_fault_slot * merge_fault_claim(const merge_fault_range * ranges, size_t n_ranges) {
    if (cached_tid == 0) cached_tid = kernel_tid();
    const pid_t tid = cached_tid;
    const size_t start = (size_t) tid % n_slots;
    for (size_t k = 0; k < n_slots; k++) {
        merge_fault_slot & s = slots[(start + k) % n_slots];
        pid_t expected = 0;
        if (s.tid.load(std::memory_order_relaxed) != 0) continue;
        if (!s.tid.compare_exchange_strong(expected, tid, std::memory_order_acquire)) continue;
        s.armed = 0;
        s.ranges = ranges;
        s.n_ranges = n_ranges;
        s.fault_address = 0;
        return &s;
    }
    return nullptr;
}

void merge_fault_release(merge_fault_slot * slot) {
    slot->armed = 0;
    std::atomic_signal_fence(std::memory_order_seq_cst);
    slot->tid.store(0, std::memory_order_release);
}

merge_fault_thread_scope::merge_fault_thread_scope() {
    sigset_t bus;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    if (pthread_sigmask(SIG_UNBLOCK, &bus, &previous_) == 0) restore_ = sigismember(&previous_, SIGBUS) == 1;
}

merge_fault_thread_scope::~merge_fault_thread_scope() {
    if (restore_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}
