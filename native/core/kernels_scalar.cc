// The scalar reference kernels: plain C++, compiled without ISA flags. The SIMD tables must
// produce the same bytes (test/native/kernels.test.ts checks every ISA against a reference
// computed independently in JS).
#include <cstring>

#include "convert.h"
#include "dtype.h"
#include "kernels.h"
#include "method_kernels.h"

namespace {

inline uint16_t read_u16(const void * src, size_t i) {
    uint16_t h;
    std::memcpy(&h, (const char *) src + 2 * i, 2);
    return h;
}

inline void write_u16(void * dst, size_t i, uint16_t h) { std::memcpy((char *) dst + 2 * i, &h, 2); }

void load_f16(float * dst, const void * src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = st_f16_to_f32(read_u16(src, i));
}

void load_bf16(float * dst, const void * src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = st_bf16_to_f32(read_u16(src, i));
}

void load_f32(float * dst, const void * src, size_t n) { std::memcpy(dst, src, n * 4); }

void load_f64(float * dst, const void * src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double d;
        std::memcpy(&d, (const char *) src + 8 * i, 8);
        dst[i] = (float) d;
    }
}

void store_f16(void * dst, const float * src, size_t n) {
    for (size_t i = 0; i < n; i++) write_u16(dst, i, st_f32_to_f16(src[i]));
}

void store_bf16(void * dst, const float * src, size_t n) {
    for (size_t i = 0; i < n; i++) write_u16(dst, i, st_f32_to_bf16(src[i]));
}

void store_f32(void * dst, const float * src, size_t n) { std::memcpy(dst, src, n * 4); }

void store_f64(void * dst, const float * src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const double d = (double) src[i];
        std::memcpy((char *) dst + 8 * i, &d, 8);
    }
}

void load_f8_e4m3(float * dst, const void * src, size_t n) {
    const uint8_t * s = (const uint8_t *) src;
    for (size_t i = 0; i < n; i++) std::memcpy(dst + i, &st_f8_table.e4m3[s[i]], 4);
}

void load_f8_e5m2(float * dst, const void * src, size_t n) {
    const uint8_t * s = (const uint8_t *) src;
    for (size_t i = 0; i < n; i++) std::memcpy(dst + i, &st_f8_table.e5m2[s[i]], 4);
}

void store_f8_e4m3(void * dst, const float * src, size_t n) {
    uint8_t * d = (uint8_t *) dst;
    for (size_t i = 0; i < n; i++) d[i] = st_f32_to_f8_e4m3(src[i]);
}

void store_f8_e5m2(void * dst, const float * src, size_t n) {
    uint8_t * d = (uint8_t *) dst;
    for (size_t i = 0; i < n; i++) d[i] = st_f32_to_f8_e5m2(src[i]);
}

void round_f8_e4m3(float * x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = st_f8_e4m3_to_f32(st_f32_to_f8_e4m3(x[i]));
}

void round_f8_e5m2(float * x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = st_f8_e5m2_to_f32(st_f32_to_f8_e5m2(x[i]));
}

void round_f16(float * x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = st_f16_to_f32(st_f32_to_f16(x[i]));
}

void round_bf16(float * x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = st_bf16_to_f32(st_f32_to_bf16(x[i]));
}

void weighted_sum(float * r, const float * a, const float * b, float p0, float p1, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float x = a[i] * p0;
        const float y = b[i] * p1;
        r[i] = x + y;
    }
}

void add_difference(float * r, const float * a, const float * b, const float * c, float p0, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float t = b[i] - c[i];
        t = t * p0;
        r[i] = a[i] + t;
    }
}

void lerp(float * r, const float * a, const float * b, float p0, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float t = b[i] - a[i];
        t = t * p0;
        r[i] = a[i] + t;
    }
}

void pair_lookup(void * dst, const uint8_t * a, const uint8_t * b, const uint8_t * table, uint32_t out_size, size_t n) {
    uint8_t * d = (uint8_t *) dst;
    switch (out_size) {
        case 1: st_pair_lookup<1>(d, a, b, table, n); break;
        case 2: st_pair_lookup<2>(d, a, b, table, n); break;
        default: st_pair_lookup<4>(d, a, b, table, n); break;
    }
}

const merge_kernels table = {
    "scalar",
    load_f8_e4m3, load_f8_e5m2, store_f8_e4m3, store_f8_e5m2, round_f8_e4m3, round_f8_e5m2,
    load_f16, load_bf16, load_f32, load_f64,
    store_f16, store_bf16, store_f32, store_f64,
    round_f16, round_bf16,
    weighted_sum, add_difference, lerp,
    pair_lookup,
    merge_method_kernel,
    nullptr,
};

} // namespace

const merge_kernels * merge_kernels_scalar() { return &table; }

merge_load_fn merge_kernels_load(const merge_kernels * k, uint32_t dtype) {
    switch (dtype) {
        case ST_DTYPE_F16: return k->load_f16;
        case ST_DTYPE_BF16: return k->load_bf16;
        case ST_DTYPE_F32: return k->load_f32;
        case ST_DTYPE_F64: return k->load_f64;
        case ST_DTYPE_F8_E4M3: return k->load_f8_e4m3;
        case ST_DTYPE_F8_E5M2: return k->load_f8_e5m2;
        default: return nullptr;
    }
}

merge_store_fn merge_kernels_store(const merge_kernels * k, uint32_t dtype) {
    switch (dtype) {
        case ST_DTYPE_F16: return k->store_f16;
        case ST_DTYPE_BF16: return k->store_bf16;
        case ST_DTYPE_F32: return k->store_f32;
        case ST_DTYPE_F64: return k->store_f64;
        case ST_DTYPE_F8_E4M3: return k->store_f8_e4m3;
        case ST_DTYPE_F8_E5M2: return k->store_f8_e5m2;
        default: return nullptr;
    }
}

merge_round_fn merge_kernels_round(const merge_kernels * k, uint32_t dtype) {
    switch (dtype) {
        case ST_DTYPE_F16: return k->round_f16;
        case ST_DTYPE_BF16: return k->round_bf16;
        case ST_DTYPE_F8_E4M3: return k->round_f8_e4m3;
        case ST_DTYPE_F8_E5M2: return k->round_f8_e5m2;
        default: return nullptr;
    }
}

merge_task_merge_half_fn merge_task_merge_half_for(const merge_kernels * k, uint32_t in, uint32_t out) { return k->task_merge_half ? k->task_merge_half(in, out) : nullptr; }
