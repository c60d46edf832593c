#include "lowrank.h"

// Plain loops: built with -ffp-contract=off, so a product and an add round separately even
// when the compiler vectorises the column loop (which it may: the columns are independent and
// the order over r is kept).
void lowrank_product_f32(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp) {
    size_t k = 0;
    while (k < m) {
        const uint64_t i = i0 + k;
        const uint64_t row = i / cols, col = i % cols;
        const size_t len = (size_t) (cols - col < m - k ? cols - col : m - k);
        float * dst = out + k;
        for (uint32_t r = 0; r < f.rank; r++) {
            float u;
            f.load_up(&u, f.up + (row * f.rank + r) * f.up_size, 1);
            f.load_down(tmp, f.down + ((uint64_t) r * cols + col) * f.down_size, len);
            if (r == 0) {
                for (size_t j = 0; j < len; j++) dst[j] = u * tmp[j];
            } else {
                for (size_t j = 0; j < len; j++) {
                    const float p = u * tmp[j];
                    dst[j] = dst[j] + p;
                }
            }
        }
        k += len;
    }
}

void lowrank_hadamard_f32(float * out, const float * other, size_t m) {
    for (size_t j = 0; j < m; j++) out[j] = out[j] * other[j];
}

namespace {

// One element of a Kronecker factor: a stored value, or its low-rank product in the fixed order.
float kron_factor_at(const kron_factor_view & f, uint64_t i, uint64_t j) {
    float v;
    if (f.rank == 0) {
        f.load_full(&v, f.full + (i * f.cols + j) * f.full_size, 1);
        return v;
    }
    for (uint32_t r = 0; r < f.rank; r++) {
        float u, d;
        f.load_up(&u, f.up + (i * f.rank + r) * f.up_size, 1);
        f.load_down(&d, f.down + ((uint64_t) r * f.cols + j) * f.down_size, 1);
        const float p = u * d;
        v = r == 0 ? p : v + p;
    }
    return v;
}

} // namespace

void kronecker_f32(const kron_factor_view & a, const kron_factor_view & b, uint64_t b_rows, uint64_t kernel, uint64_t row_start, uint64_t cols, uint64_t i0, size_t m, float * out) {
    const uint64_t d = b.cols / kernel;
    for (size_t k = 0; k < m; k++) {
        const uint64_t i = i0 + k;
        const uint64_t row = row_start + i / cols, col = i % cols;
        const uint64_t in = col / kernel, s = col % kernel;
        const float x = kron_factor_at(a, row / b_rows, in / d);
        const float y = kron_factor_at(b, row % b_rows, (in % d) * kernel + s);
        out[k] = x * y;
    }
}
