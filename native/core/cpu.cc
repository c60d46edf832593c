#include "cpu.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace {

#if defined(__x86_64__) || defined(__i386__)
unsigned long long read_xcr0() {
    unsigned int eax, edx;
    // xgetbv is only legal once CPUID says OSXSAVE; the caller checks that first.
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long) edx << 32) | eax;
}

merge_cpu_features detect() {
    merge_cpu_features f;
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    f.sse2 = (edx >> 26) & 1;
    f.fma = (ecx >> 12) & 1;
    const bool osxsave = (ecx >> 27) & 1;
    f.avx = (ecx >> 28) & 1;
    f.f16c = (ecx >> 29) & 1;
    f.hypervisor = (ecx >> 31) & 1;
    if (osxsave) {
        const unsigned long long xcr0 = read_xcr0();
        f.os_ymm = (xcr0 & 0x6) == 0x6;
        f.os_zmm = f.os_ymm && (xcr0 & 0xe0) == 0xe0;
    }
    unsigned int max_leaf = __get_cpuid_max(0, nullptr);
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, eax, ebx, ecx, edx);
        f.avx2 = (ebx >> 5) & 1;
        f.avx512f = (ebx >> 16) & 1;
        f.avx512dq = (ebx >> 17) & 1;
        f.avx512bw = (ebx >> 30) & 1;
        f.avx512vl = (ebx >> 31) & 1;
    }
    return f;
}
#else
merge_cpu_features detect() { return merge_cpu_features(); }
#endif

} // namespace

const merge_cpu_features & merge_cpu_detect() {
    static const merge_cpu_features features = detect();
    return features;
}

bool merge_isa_supported(merge_isa isa) {
    const merge_cpu_features & f = merge_cpu_detect();
    switch (isa) {
        case MERGE_ISA_AUTO:
        case MERGE_ISA_SCALAR: return true;
        case MERGE_ISA_AVX2: return merge_kernels_avx2() && f.avx && f.avx2 && f.f16c && f.os_ymm;
        case MERGE_ISA_AVX512:
            return merge_kernels_avx512() && f.avx512f && f.avx512bw && f.avx512vl && f.f16c && f.avx2 && f.os_zmm;
    }
    return false;
}

merge_isa merge_isa_best() {
    if (merge_isa_supported(MERGE_ISA_AVX512)) return MERGE_ISA_AVX512;
    if (merge_isa_supported(MERGE_ISA_AVX2)) return MERGE_ISA_AVX2;
    return MERGE_ISA_SCALAR;
}

const char * merge_isa_name(merge_isa isa) {
    switch (isa) {
        case MERGE_ISA_AUTO: return "auto";
        case MERGE_ISA_SCALAR: return "scalar";
        case MERGE_ISA_AVX2: return "avx2";
        case MERGE_ISA_AVX512: return "avx512";
    }
    return "?";
}

const merge_kernels * merge_kernels_for(merge_isa isa) {
    if (isa == MERGE_ISA_AUTO) isa = merge_isa_best();
    if (!merge_isa_supported(isa)) return nullptr;
    switch (isa) {
        case MERGE_ISA_AVX2: return merge_kernels_avx2();
        case MERGE_ISA_AVX512: return merge_kernels_avx512();
        default: return merge_kernels_scalar();
    }
}
