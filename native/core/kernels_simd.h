// The SIMD kernels, written once over a vector traits type V (ggml's simd-mappings idea).
// Included by kernels_avx2.cc and kernels_avx512.cc, each compiled with its own -m flags and
// each defining V. Everything is in an anonymous namespace so no symbol compiled with
// AVX-512 flags can be shared with (and picked by the linker for) another object.
//
// V provides: W (lanes), vf, loadu/storeu (fp32), add/sub/mul/set1 (and what the method kernels
// need, see method_kernels_simd.h), load_f16/store_f16,
// load_bf16/store_bf16, load_f64/store_f64, load/store_f8_e4m3 and _e5m2 (W elements at any
// byte address), round_f16/round_bf16 (narrow then widen), and pair_gather<size> (W pair-table
// lookups, see merge_pair_lookup_fn). Leftover elements use the
// scalar conversions of convert.h, which V's conversions must match bit for bit.
#pragma once

#include <cstring>

#include "convert.h"
#include "dtype.h"
#include "kernels.h"
#include "method_kernels_simd.h"
#include "task_merge_lanes.h"

namespace {

template <class V>
struct simd_kernels {
    typedef typename V::vf vf;
    static constexpr size_t W = V::W;

    static void load_f16(float * dst, const void * src, size_t n) {
        const char * s = (const char *) src;
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            V::storeu(dst + i, V::load_f16(s + 2 * i));
            V::storeu(dst + i + W, V::load_f16(s + 2 * (i + W)));
        }
        for (; i + W <= n; i += W) V::storeu(dst + i, V::load_f16(s + 2 * i));
        for (; i < n; i++) {
            uint16_t h;
            std::memcpy(&h, s + 2 * i, 2);
            dst[i] = st_f16_to_f32(h);
        }
    }

    static void load_bf16(float * dst, const void * src, size_t n) {
        const char * s = (const char *) src;
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(dst + i, V::load_bf16(s + 2 * i));
        for (; i < n; i++) {
            uint16_t h;
            std::memcpy(&h, s + 2 * i, 2);
            dst[i] = st_bf16_to_f32(h);
        }
    }

    static void load_f32(float * dst, const void * src, size_t n) { std::memcpy(dst, src, n * 4); }

    static void load_f64(float * dst, const void * src, size_t n) {
        const char * s = (const char *) src;
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(dst + i, V::load_f64(s + 8 * i));
        for (; i < n; i++) {
            double d;
            std::memcpy(&d, s + 8 * i, 8);
            dst[i] = (float) d;
        }
    }

    static void store_f16(void * dst, const float * src, size_t n) {
        char * d = (char *) dst;
        size_t i = 0;
        for (; i + 2 * W <= n; i += 2 * W) {
            V::store_f16(d + 2 * i, V::loadu(src + i));
            V::store_f16(d + 2 * (i + W), V::loadu(src + i + W));
        }
        for (; i + W <= n; i += W) V::store_f16(d + 2 * i, V::loadu(src + i));
        for (; i < n; i++) {
            const uint16_t h = st_f32_to_f16(src[i]);
            std::memcpy(d + 2 * i, &h, 2);
        }
    }

    static void store_bf16(void * dst, const float * src, size_t n) {
        char * d = (char *) dst;
        size_t i = 0;
        for (; i + W <= n; i += W) V::store_bf16(d + 2 * i, V::loadu(src + i));
        for (; i < n; i++) {
            const uint16_t h = st_f32_to_bf16(src[i]);
            std::memcpy(d + 2 * i, &h, 2);
        }
    }

    static void store_f32(void * dst, const float * src, size_t n) { std::memcpy(dst, src, n * 4); }

    static void store_f64(void * dst, const float * src, size_t n) {
        char * d = (char *) dst;
        size_t i = 0;
        for (; i + W <= n; i += W) V::store_f64(d + 8 * i, V::loadu(src + i));
        for (; i < n; i++) {
            const double v = (double) src[i];
            std::memcpy(d + 8 * i, &v, 8);
        }
    }

    // fp8: V::load_f8_* widen W codes to the values of convert.h's 256-entry tables (which the
    // tails use), V::store_f8_* narrow W lanes with convert.h's rules.
    static void load_f8_e4m3(float * dst, const void * src, size_t n) {
        const uint8_t * s = (const uint8_t *) src;
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(dst + i, V::load_f8_e4m3(s + i));
        for (; i < n; i++) std::memcpy(dst + i, &st_f8_table.e4m3[s[i]], 4);
    }
    static void load_f8_e5m2(float * dst, const void * src, size_t n) {
        const uint8_t * s = (const uint8_t *) src;
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(dst + i, V::load_f8_e5m2(s + i));
        for (; i < n; i++) std::memcpy(dst + i, &st_f8_table.e5m2[s[i]], 4);
    }
    static void store_f8_e4m3(void * dst, const float * src, size_t n) {
        uint8_t * d = (uint8_t *) dst;
        size_t i = 0;
        for (; i + W <= n; i += W) V::store_f8_e4m3(d + i, V::loadu(src + i));
        for (; i < n; i++) d[i] = st_f32_to_f8_e4m3(src[i]);
    }
    static void store_f8_e5m2(void * dst, const float * src, size_t n) {
        uint8_t * d = (uint8_t *) dst;
        size_t i = 0;
        for (; i + W <= n; i += W) V::store_f8_e5m2(d + i, V::loadu(src + i));
        for (; i < n; i++) d[i] = st_f32_to_f8_e5m2(src[i]);
    }
    static void round_f8_e4m3(float * x, size_t n) {
        uint8_t codes[W];
        size_t i = 0;
        for (; i + W <= n; i += W) {
            V::store_f8_e4m3(codes, V::loadu(x + i));
            V::storeu(x + i, V::load_f8_e4m3(codes));
        }
        for (; i < n; i++) x[i] = st_f8_e4m3_to_f32(st_f32_to_f8_e4m3(x[i]));
    }
    static void round_f8_e5m2(float * x, size_t n) {
        uint8_t codes[W];
        size_t i = 0;
        for (; i + W <= n; i += W) {
            V::store_f8_e5m2(codes, V::loadu(x + i));
            V::storeu(x + i, V::load_f8_e5m2(codes));
        }
        for (; i < n; i++) x[i] = st_f8_e5m2_to_f32(st_f32_to_f8_e5m2(x[i]));
    }

    static void round_f16(float * x, size_t n) {
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(x + i, V::round_f16(V::loadu(x + i)));
        for (; i < n; i++) x[i] = st_f16_to_f32(st_f32_to_f16(x[i]));
    }

    static void round_bf16(float * x, size_t n) {
        size_t i = 0;
        for (; i + W <= n; i += W) V::storeu(x + i, V::round_bf16(V::loadu(x + i)));
        for (; i < n; i++) x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i]));
    }

    static void weighted_sum(float * r, const float * a, const float * b, float p0, float p1, size_t n) {
        const vf v0 = V::set1(p0), v1 = V::set1(p1);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf x = V::mul(V::loadu(a + i), v0);
            const vf y = V::mul(V::loadu(b + i), v1);
            V::storeu(r + i, V::add(x, y));
        }
        for (; i < n; i++) {
            const float x = a[i] * p0;
            const float y = b[i] * p1;
            r[i] = x + y;
        }
    }

    static void add_difference(float * r, const float * a, const float * b, const float * c, float p0, size_t n) {
        const vf v0 = V::set1(p0);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            vf t = V::sub(V::loadu(b + i), V::loadu(c + i));
            t = V::mul(t, v0);
            V::storeu(r + i, V::add(V::loadu(a + i), t));
        }
        for (; i < n; i++) {
            float t = b[i] - c[i];
            t = t * p0;
            r[i] = a[i] + t;
        }
    }

    static void lerp(float * r, const float * a, const float * b, float p0, size_t n) {
        const vf v0 = V::set1(p0);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf va = V::loadu(a + i);
            vf t = V::sub(V::loadu(b + i), va);
            t = V::mul(t, v0);
            V::storeu(r + i, V::add(va, t));
        }
        for (; i < n; i++) {
            float t = b[i] - a[i];
            t = t * p0;
            r[i] = a[i] + t;
        }
    }

    // The 16-bit float formats of the fused task merge: W elements and one element, each way.
    // fp16 operands widen by vcvtph2ps alone: every operand is used only in subtractions and an
    // addition, which quiet a signalling NaN as vcvtph2ps does, so the bits are the slots' path's.
    struct half_f16 {
        static vf load(const void * p) { return V::load_f16_quieted(p); }
        static void store(void * p, vf x) { V::store_f16(p, x); }
        static float widen(uint16_t h) { return st_f16_to_f32(h); }
        static uint16_t narrow(float x) { return st_f32_to_f16(x); }
    };
    struct half_bf16 {
        static vf load(const void * p) { return V::load_bf16(p); } // exact: the slots' widening
        static void store(void * p, vf x) { V::store_bf16(p, x); }
        static float widen(uint16_t h) { return st_bf16_to_f32(h); }
        static uint16_t narrow(float x) { return st_f32_to_bf16(x); }
    };

    // The fused task merge (kernels.h merge_task_merge_half_fn) from In operands to an Out
    // output: the model counts of task_merge_body (many_kernels.cc) unrolled, any other with a
    // loop; the tail widens and narrows as the slots' loads and stores do on theirs.
    template <uint32_t Models, class In, class Out>
    static void task_merge_half_models(void * dst, const uint8_t * const * src, const merge_many_args & a, size_t n) {
        typedef typename tm_vec<W>::f F;
        const task_merge_lanes<W, Models> lanes(a);
        char * d = (char *) dst;
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const F v = lanes.step([&](uint32_t j) TM_BODY_LAMBDA { return (F) In::load(src[j] + 2 * i); });
            Out::store(d + 2 * i, (vf) v);
        }
        if (i == n) return;
        float out[W];
        lanes.tail(
                n - i,
                [&](uint32_t j, size_t e) TM_BODY_LAMBDA {
                    uint16_t h;
                    std::memcpy(&h, src[j] + 2 * (i + e), 2);
                    return In::widen(h);
                },
                out);
        for (size_t e = 0; i + e < n; e++) {
            const uint16_t h = Out::narrow(out[e]);
            std::memcpy(d + 2 * (i + e), &h, 2);
        }
    }
    template <class In, class Out>
    static void task_merge_half(void * dst, const uint8_t * const * src, const merge_many_args & a, size_t n) {
        switch (a.n_args - 1) {
            case 2: return task_merge_half_models<2, In, Out>(dst, src, a, n);
            case 3: return task_merge_half_models<3, In, Out>(dst, src, a, n);
            case 4: return task_merge_half_models<4, In, Out>(dst, src, a, n);
            default: return task_merge_half_models<0, In, Out>(dst, src, a, n);
        }
    }
    template <class In> static merge_task_merge_half_fn task_merge_half_to(uint32_t out) {
        return out == ST_DTYPE_F16 ? task_merge_half<In, half_f16> : out == ST_DTYPE_BF16 ? task_merge_half<In, half_bf16> : nullptr;
    }
    static merge_task_merge_half_fn task_merge_half_for(uint32_t in, uint32_t out) {
        return in == ST_DTYPE_F16 ? task_merge_half_to<half_f16>(out) : in == ST_DTYPE_BF16 ? task_merge_half_to<half_bf16>(out) : nullptr;
    }

    // W lookups at a time by V::pair_gather<size> (32-bit gathers at entry * size, narrowed to size bytes).
    template <size_t size>
    static void pair_lookup_sized(uint8_t * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table, size_t n) {
        size_t i = 0;
        for (; i + W <= n; i += W) V::template pair_gather<size>(dst + i * size, a + i, b + i, table);
        st_pair_lookup<size>(dst + i * size, a + i, b + i, table, n - i);
    }
    static void pair_lookup(void * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table, uint32_t out_size, size_t n) {
        uint8_t * d = (uint8_t *) dst;
        switch (out_size) {
            case 1: pair_lookup_sized<1>(d, a, b, table, n); break;
            case 2: pair_lookup_sized<2>(d, a, b, table, n); break;
            default: pair_lookup_sized<4>(d, a, b, table, n); break;
        }
    }

    // constexpr: the tables must be constant-initialized, since dynamic initialization would
    // run code compiled with AVX flags when the addon loads, before any CPU check.
    static constexpr merge_kernels table(const char * isa) {
        return merge_kernels{
            isa,
            load_f8_e4m3, load_f8_e5m2, store_f8_e4m3, store_f8_e5m2, round_f8_e4m3, round_f8_e5m2,
            load_f16, load_bf16, load_f32, load_f64,
            store_f16, store_bf16, store_f32, store_f64,
            round_f16, round_bf16,
            weighted_sum, add_difference, lerp,
            pair_lookup,
            simd_methods<V>::lookup,
            task_merge_half_for,
        };
    }
};

} // namespace
