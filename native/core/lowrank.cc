#include "lowrank.h"

// The ISA of the job's kernel set picks the product code: the tables are singletons, so their
// addresses say which set the job runs (cpu.cc only hands out a table the CPU supports).
void lowrank_product_f32(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n) {
    if (f.kernels != nullptr && m > 0) {
        if (f.kernels == merge_kernels_avx512() && lowrank_product_avx512(f, cols, i0, m, out, tmp, tmp_n)) return;
        if (f.kernels == merge_kernels_avx2() && lowrank_product_avx2(f, cols, i0, m, out, tmp, tmp_n)) return;
    }
    lowrank_product_scalar_f32(f, cols, i0, m, out, tmp, tmp_n);
}

// Plain loops: built with -ffp-contract=off, so a product and an add round separately even
// when the compiler vectorises the column loop (the columns are independent). Four factor rows
// are widened at a time and their four products added in one pass over a column chunk, in
// ascending r: the same operations per element as one row at a time, fewer passes over `out`.
void lowrank_product_scalar_f32(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n) {
    const size_t chunk_max = tmp_n / 4;
    size_t k = 0;
    while (k < m) {
        const uint64_t i = i0 + k;
        const uint64_t row = i / cols, col = i % cols;
        const size_t len = (size_t) (cols - col < m - k ? cols - col : m - k);
        for (size_t c = 0; c < len; c += chunk_max) {
            const size_t n = len - c < chunk_max ? len - c : chunk_max;
            float * dst = out + k + c;
            const float * t0 = tmp;
            const float * t1 = tmp + n;
            const float * t2 = tmp + 2 * n;
            const float * t3 = tmp + 3 * n;
            for (uint32_t r = 0; r < f.rank;) {
                const uint32_t g = f.rank - r < 4 ? f.rank - r : 4;
                float u[4];
                for (uint32_t q = 0; q < g; q++) {
                    f.load_up(&u[q], f.up + (row * f.rank + r + q) * f.up_size, 1);
                    f.load_down(tmp + q * n, f.down + ((uint64_t) (r + q) * cols + col + c) * f.down_size, n);
                }
                if (g == 4 && r == 0) {
                    for (size_t j = 0; j < n; j++) {
                        float a = u[0] * t0[j];
                        a = a + u[1] * t1[j];
                        a = a + u[2] * t2[j];
                        dst[j] = a + u[3] * t3[j];
                    }
                } else if (g == 4) {
                    for (size_t j = 0; j < n; j++) {
                        float a = dst[j] + u[0] * t0[j];
                        a = a + u[1] * t1[j];
                        a = a + u[2] * t2[j];
                        dst[j] = a + u[3] * t3[j];
                    }
                } else {
                    for (uint32_t q = 0; q < g; q++) {
                        const float * t = tmp + q * n;
                        if (r + q == 0) {
                            for (size_t j = 0; j < n; j++) dst[j] = u[q] * t[j];
                        } else {
                            for (size_t j = 0; j < n; j++) dst[j] = dst[j] + u[q] * t[j];
                        }
                    }
                }
                r += g;
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
    float v = 0.0f; // set by the load, or by r = 0 (rank ≥ 1, checked by the job validation)
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

// A row of the operand reads B's row (row mod b_rows) again for every column of A: those values
// are computed once per row into a stack buffer when the range covers a whole B row (each value
// is the same kron_factor_at, so the same bits), and A's value is kept while its column lasts.
void kronecker_f32(const kron_factor_view & a, const kron_factor_view & b, uint64_t b_rows, uint64_t kernel, uint64_t row_start, uint64_t cols, uint64_t i0, size_t m, float * out) {
    constexpr uint64_t B_ROW_MAX = 2048;
    float b_row[B_ROW_MAX];
    const uint64_t d = b.cols / kernel;
    size_t k = 0;
    while (k < m) {
        const uint64_t i = i0 + k;
        const uint64_t row = row_start + i / cols, col0 = i % cols;
        const size_t len = (size_t) (cols - col0 < m - k ? cols - col0 : m - k);
        const uint64_t a_row = row / b_rows, b_r = row % b_rows;
        const bool cached = b.cols <= B_ROW_MAX && len >= b.cols;
        if (cached)
            for (uint64_t j = 0; j < b.cols; j++) b_row[j] = kron_factor_at(b, b_r, j);
        uint64_t a_col = UINT64_MAX;
        float x = 0.0f;
        for (size_t t = 0; t < len; t++) {
            const uint64_t col = col0 + t;
            const uint64_t in = col / kernel, s = col % kernel;
            if (in / d != a_col) {
                a_col = in / d;
                x = kron_factor_at(a, a_row, a_col);
            }
            const uint64_t b_col = (in % d) * kernel + s;
            const float y = cached ? b_row[b_col] : kron_factor_at(b, b_r, b_col);
            out[k + t] = x * y;
        }
        k += len;
    }
}
