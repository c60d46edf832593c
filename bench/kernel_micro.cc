// Kernel microbenchmark (issue 11): ns per element of the task-merge kernel (TIES flags), of
// SLERP's lane sums (a·b, a·a, b·b) and, on fp16 copies of the operands (AVX2 / AVX-512), of
// TIES's output pass by slots (4 widenings, the kernel, the fp16 store) and fused
// (merge_task_merge_half_fn), and of its bracket pass (3 fused scans of base and a model), on one
// 4096-element block in L1, best of 15 × 2000 calls,
// with a hash of the results (equal between two builds = the same bits). Not built by default:
//   g++ -O2 -std=c++17 -Inative/core bench/kernel_micro.cc build/libtensormerge_core.a -o /tmp/kernel_micro
//   /tmp/kernel_micro avx512 41     (ISA: scalar | avx2 | avx512; task-merge flags, 41 = TIES)
// Link it against another build's libtensormerge_core.a (and its native/core headers) for an A/B.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "dtype.h"
#include "kernels.h"
#include "kth_bracket.h"
#include "many_kernels.h"
#include "reduction_lanes.h"

template <class F> double best_ns(F && f, size_t n) {
    double best = 1e9;
    for (int rep = 0; rep < 15; rep++) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < 2000; k++) f(k);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / (2000.0 * n) * 1e9);
    }
    return best;
}

int main(int argc, char ** argv) {
    const char * isa = argc > 1 ? argv[1] : "avx512";
    const uint32_t flags = argc > 2 ? (uint32_t) atoi(argv[2]) : 41;
    const size_t n = 4096;
    std::mt19937 g(1);
    std::normal_distribution<float> d(0, 0.02f);
    std::vector<float> x[4];
    for (auto & v : x) {
        v.resize(n + 5);
        for (auto & e : v) e = d(g);
    }
    for (int j = 1; j < 4; j++)
        for (size_t i = 0; i < n; i++) x[j][i] = x[0][i] + d(g) * 0.05f; // task vectors of ~1e-3
    const float * xs[4] = {x[0].data(), x[1].data(), x[2].data(), x[3].data()};
    float params[7] = {1, 0.8f, 0.6f, 1, 0.5f, 0.5f, 0.5f};
    const float threshold = 0.0015f; // keeps ~20% of each task vector
    uint32_t key;
    std::memcpy(&key, &threshold, 4);
    const double stats[3] = {(double) key, (double) key, (double) key};
    const uint32_t ints[7] = {flags, 1, 2, 3, 1u << 31, 1u << 31, 1u << 31};
    std::vector<float> r(n);
    merge_many_args a{xs, 4, params, 7, stats, (uint32_t) ((flags & TASK_MERGE_TRIM) ? 3 : 0), ints, 7, 0, nullptr};
    const merge_many_fn f = merge_many_kernel(MERGE_KERNEL_TASK_MERGE, isa);
    const double tm = best_ns([&](int k) { a.index = (uint64_t) k * n; f(r.data(), a, n); }, n);
    uint32_t h = 0;
    for (float v : r) {
        uint32_t b;
        std::memcpy(&b, &v, 4);
        h = h * 31 + b;
    }
    std::printf("%s task-merge flags %u: %.3f ns/element (hash %08x)\n", isa, flags, tm, h);

    const size_t m = n + 5; // a tail past the lanes
    const float * lx[3] = {xs[0], xs[0], xs[1]}, * ly[3] = {xs[1], xs[0], xs[1]};
    double l[3][8] = {};
    double * lanes[3] = {l[0], l[1], l[2]};
    const reduction_lanes_fn sums = reduction_lanes_for(isa);
    const double ls = best_ns([&](int) { sums(3, lx, ly, lanes, m); }, m);
    uint64_t hl = 0;
    for (auto & row : l)
        for (double v : row) {
            uint64_t b;
            std::memcpy(&b, &v, 8);
            hl = hl * 31 + b;
        }
    std::printf("%s slerp lane sums: %.3f ns/element (hash %016llx)\n", isa, ls, (unsigned long long) hl);

    const merge_kernels * kt = std::strcmp(isa, "avx512") == 0 ? merge_kernels_avx512() : std::strcmp(isa, "avx2") == 0 ? merge_kernels_avx2() : nullptr;
    const merge_task_merge_half_fn tm16 = kt ? merge_task_merge_half_for(kt, ST_DTYPE_F16, ST_DTYPE_F16) : nullptr;
    if (!tm16 || (flags & TASK_MERGE_DROP)) return 0;
    std::vector<uint16_t> h16[4];
    const uint8_t * src[4];
    for (int j = 0; j < 4; j++) {
        h16[j].resize(n);
        kt->store_f16(h16[j].data(), xs[j], n);
        src[j] = (const uint8_t *) h16[j].data();
    }
    std::vector<float> slots[4];
    for (auto & v : slots) v.resize(n);
    const float * sx[4] = {slots[0].data(), slots[1].data(), slots[2].data(), slots[3].data()};
    std::vector<uint16_t> out(n);
    auto hash16 = [&] {
        uint32_t hh = 0;
        for (uint16_t v : out) hh = hh * 31 + v;
        return hh;
    };
    merge_many_args as{sx, 4, params, 7, stats, a.n_stats, ints, 7, 0, nullptr};
    const double by_slots = best_ns([&](int) {
        for (int j = 0; j < 4; j++) kt->load_f16(slots[j].data(), src[j], n);
        f(r.data(), as, n);
        kt->store_f16(out.data(), r.data(), n);
    }, n);
    const uint32_t h_slots = hash16();
    const double fused = best_ns([&](int) { tm16(out.data(), src, as, n); }, n);
    std::printf("%s TIES output pass fp16: slots %.3f, fused %.3f ns/element (hashes %08x %08x)\n", isa, by_slots, fused, h_slots, hash16());
    const kth_bracket_scan_half_sum_fn scan = kth_bracket_scan_half_sum_for(isa, ST_DTYPE_F16);
    std::vector<uint32_t> inside(n + 16);
    kth_bracket_counts c{};
    // A bracket with ~2.6% of the keys inside (|δ| in [0.00145, 0.00155), δ ~ N(0, 0.001)), as TIES's are.
    const float bracket_lo = 0.00145f, bracket_hi = 0.00155f;
    uint32_t lo, hi;
    std::memcpy(&lo, &bracket_lo, 4);
    std::memcpy(&hi, &bracket_hi, 4);
    uint64_t kept = 0;
    const double bracket = best_ns([&](int) {
        for (int j = 1; j < 4; j++) kept += scan(src[j], src[0], 1.0f, -1.0f, n, lo, hi, &c, inside.data());
    }, n);
    std::printf("%s TIES bracket pass fp16, 3 models: %.3f ns/element (above %.4f, inside %.4f of the keys)\n", isa, bracket, (double) c.above / (3.0 * n * 2000 * 15), (double) kept / (3.0 * n * 2000 * 15));
}
