// CPU feature detection (cpuid + the OS's XSAVE state) and kernel-set selection.
// Detection runs once; the results are immutable afterwards, so every function is thread-safe.
#pragma once

#include "job.h"
#include "kernels.h"

struct merge_cpu_features {
    bool sse2 = false, avx = false, avx2 = false, f16c = false, fma = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool os_ymm = false; // the OS saves YMM state (XCR0 bits 1-2)
    bool os_zmm = false; // the OS saves opmask/ZMM state (XCR0 bits 5-7)
    bool hypervisor = false; // CPUID.1:ECX bit 31: running under a hypervisor (merge_input_cache AUTO)
};

const merge_cpu_features & merge_cpu_detect();

/** Whether this build and this CPU can run the kernel set (AUTO and SCALAR: always). */
bool merge_isa_supported(merge_isa isa);

/** The best supported set: AVX512, then AVX2, then SCALAR. */
merge_isa merge_isa_best();

/** "scalar", "avx2", "avx512" ("auto" for MERGE_ISA_AUTO). */
const char * merge_isa_name(merge_isa isa);

/** The kernel table for a supported set (AUTO resolves to the best); nullptr if unsupported. */
const merge_kernels * merge_kernels_for(merge_isa isa);
