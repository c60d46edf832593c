// The low-rank product (lowrank.h) with SIMD across output columns, written once over a vector
// traits type V and included by lowrank_avx2.cc and lowrank_avx512.cc, each compiled with its
// own -m flags (no -mfma, -ffp-contract=off). Everything is in an anonymous namespace so no
// symbol built with AVX-512 flags can be picked by the linker for another object.
//
// Same bits as the scalar loops (lowrank.cc): each lane is one output element, and its value is
// built by the same operations in the same order, p_0 = fp32(u_0 · d_0), then
// P = fp32(P + fp32(u_r · d_r)) for r ascending (separate mul and add intrinsics). Only the order
// in which *different* elements are computed changes, which no value depends on.
//
// Blocking: the rank is cut in chunks of at most RANK_CHUNK (a chunk's partial sums go through
// `out`, which is exact in fp32: the next chunk reloads P and goes on adding in order), so the
// `down` rows a column tile reads (RANK_CHUNK × TILE_COLS values) stay in L1 while every output
// row of the block reuses them; up to 4 output rows share each `down` vector, and up rows are
// widened once per block into `tmp`. A tile that more than 4 rows read is widened once into a
// contiguous fp32 copy (`pack`: no conversion in the inner loop, no L1 set conflicts between
// rows of `down` a matrix row apart); otherwise `down` is read in place (F16 / BF16 / F32). A row
// the range covers only in part (its first and last) runs the whole tile on a copy and keeps its
// part: element-wise code at the range's edges cost 2/3 of the time at rank 128 (perf).
//
// V provides: W (lanes), NV (vectors per tile row the registers hold: 4 rows × NV accumulators,
// NV `down` vectors and a broadcast), vf, loadu/storeu, add, mul, set1, and
// load_down_f16/bf16/f32 (W elements at any byte address; f16 may quiet a signalling NaN:
// a product with it is the same quiet NaN the scalar path gives).
#pragma once

#include <cstring>

#include "convert.h"
#include "dtype.h"
#include "lowrank.h"

namespace {

template <class V>
struct lowrank_simd {
    typedef typename V::vf vf;
    static constexpr size_t W = V::W;
    static constexpr size_t NV = V::NV;
    static constexpr uint32_t RANK_CHUNK = 64;

    template <uint32_t DT>
    static constexpr size_t elem() {
        return DT == ST_DTYPE_F32 ? 4 : 2;
    }

    template <uint32_t DT>
    static vf load_down(const uint8_t * p) {
        if (DT == ST_DTYPE_F16) return V::load_down_f16(p);
        if (DT == ST_DTYPE_BF16) return V::load_down_bf16(p);
        return V::load_down_f32(p);
    }

    template <uint32_t DT>
    static float down_at(const uint8_t * p) {
        if (DT == ST_DTYPE_F32) {
            float x;
            std::memcpy(&x, p, 4);
            return x;
        }
        uint16_t h;
        std::memcpy(&h, p, 2);
        return DT == ST_DTYPE_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }

    /**
     * NR output rows × NV·W columns over the ranks [0, nr) of a chunk: up rows at up + q·nr,
     * `down` at the chunk's first row and the tile's first column (row stride down_stride bytes),
     * dst[q] at the tile's first column of row q. `first`: the chunk starts at r = 0.
     */
    template <uint32_t DT, size_t NR, size_t NW>
    static void tile(const float * up, uint32_t nr, const uint8_t * down, size_t down_stride, float * const * dst, bool first) {
        constexpr size_t es = elem<DT>();
        vf acc[NR][NW];
        uint32_t r = 0;
        if (first) {
            vf d[NW];
            for (size_t v = 0; v < NW; v++) d[v] = load_down<DT>(down + v * W * es);
            for (size_t q = 0; q < NR; q++) {
                const vf u = V::set1(up[q * nr]);
                for (size_t v = 0; v < NW; v++) acc[q][v] = V::mul(u, d[v]);
            }
            r = 1;
        } else {
            for (size_t q = 0; q < NR; q++)
                for (size_t v = 0; v < NW; v++) acc[q][v] = V::loadu(dst[q] + v * W);
        }
        for (; r < nr; r++) {
            const uint8_t * dr = down + (size_t) r * down_stride;
            vf d[NW];
            for (size_t v = 0; v < NW; v++) d[v] = load_down<DT>(dr + v * W * es);
            for (size_t q = 0; q < NR; q++) {
                const vf u = V::set1(up[q * nr + r]);
                for (size_t v = 0; v < NW; v++) acc[q][v] = V::add(acc[q][v], V::mul(u, d[v]));
            }
        }
        for (size_t q = 0; q < NR; q++)
            for (size_t v = 0; v < NW; v++) V::storeu(dst[q] + v * W, acc[q][v]);
    }

    template <uint32_t DT, size_t NR>
    static void tile_rows(size_t nw, const float * up, uint32_t nr, const uint8_t * down, size_t down_stride, float * const * dst, bool first) {
        switch (nw) {
            case 1: tile<DT, NR, 1>(up, nr, down, down_stride, dst, first); break;
            case 2: tile<DT, NR, (NV >= 2 ? 2 : 1)>(up, nr, down, down_stride, dst, first); break;
            case 3: tile<DT, NR, (NV >= 3 ? 3 : 1)>(up, nr, down, down_stride, dst, first); break;
            default: tile<DT, NR, NV>(up, nr, down, down_stride, dst, first); break;
        }
    }

    /** The same sums one element at a time (the columns past the last full vector). */
    template <uint32_t DT>
    static void columns(const float * up, uint32_t nr, const uint8_t * down, size_t down_stride, float * dst, size_t n, bool first) {
        constexpr size_t es = elem<DT>();
        for (size_t j = 0; j < n; j++) {
            float acc = first ? up[0] * down_at<DT>(down + j * es) : dst[j];
            for (uint32_t r = first ? 1 : 0; r < nr; r++) acc = acc + up[r] * down_at<DT>(down + (size_t) r * down_stride + j * es);
            dst[j] = acc;
        }
    }

    template <uint32_t DT>
    static void product(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n) {
        constexpr size_t es = elem<DT>();
        const uint64_t row_first = i0 / cols, row_last = (i0 + m - 1) / cols;
        const uint64_t col_first = i0 % cols, col_end_last = (i0 + m - 1) % cols + 1; // first row starts, last row ends there
        const uint64_t n_rows = row_last - row_first + 1;
        const uint32_t rc = f.rank < RANK_CHUNK ? f.rank : RANK_CHUNK;
        const size_t batch = tmp_n / rc; // rows whose up chunk fits in tmp (≥ 1, checked by the caller)
        const size_t down_stride = (size_t) cols * es;
        const uint64_t cols_v = cols / W * W;
        const uint64_t tile_cols = NV * W;
        alignas(64) float edge[4][NV * W];
        alignas(64) float pack[RANK_CHUNK * NV * W]; // one tile of `down` widened: 16 KiB for AVX-512
        for (uint64_t b0 = 0; b0 < n_rows; b0 += batch) {
            const size_t nb = (size_t) (n_rows - b0 < batch ? n_rows - b0 : batch);
            for (uint32_t r0 = 0; r0 < f.rank; r0 += rc) {
                const uint32_t nr = f.rank - r0 < rc ? f.rank - r0 : rc;
                const bool first = r0 == 0;
                for (size_t q = 0; q < nb; q++) f.load_up(tmp + q * nr, f.up + ((row_first + b0 + q) * f.rank + r0) * f.up_size, nr);
                const uint8_t * down0 = f.down + (uint64_t) r0 * down_stride;
                // Row q's columns [lo, hi) and its place in out.
                auto lo_of = [&](size_t q) { return row_first + b0 + q == row_first ? col_first : 0; };
                auto hi_of = [&](size_t q) { return row_first + b0 + q == row_last ? col_end_last : cols; };
                auto dst_of = [&](size_t q, uint64_t c) { return out + ((row_first + b0 + q) * cols + c - i0); };
                for (uint64_t c = 0; c < cols_v; c += tile_cols) {
                    const uint64_t c_end = c + tile_cols < cols_v ? c + tile_cols : cols_v;
                    const size_t nw = (size_t) ((c_end - c) / W);
                    // The rows overlapping the tile are consecutive, and only the first and last
                    // row of the range can cover part of it: such a row computes the whole tile
                    // into `edge` (its earlier partial sums copied in) and copies its part out.
                    size_t q = 0;
                    while (q < nb && !(lo_of(q) < c_end && hi_of(q) > c)) q++;
                    size_t q_end = q;
                    while (q_end < nb && lo_of(q_end) < c_end && hi_of(q_end) > c) q_end++;
                    // More than one group of rows reads this tile: widen it once into `pack`
                    // (contiguous rows; in place, the rows of `down` sit a row of the matrix apart
                    // and map to few L1 sets) and let every group read fp32.
                    const bool packed = q_end - q > 4;
                    if (packed)
                        for (uint32_t r = 0; r < nr; r++)
                            for (size_t v = 0; v < nw; v++) V::storeu(pack + (r * nw + v) * W, load_down<DT>(down0 + (size_t) r * down_stride + (c + v * W) * es));
                    while (q < q_end) {
                        size_t g = 0;
                        float * dst[4];
                        float * keep[4] = {};
                        uint64_t from[4] = {}, to[4] = {};
                        while (g < 4 && q + g < nb && lo_of(q + g) < c_end && hi_of(q + g) > c) {
                            const uint64_t lo = lo_of(q + g), hi = hi_of(q + g);
                            if (lo <= c && c_end <= hi) {
                                dst[g] = dst_of(q + g, c);
                            } else {
                                from[g] = lo > c ? lo : c;
                                to[g] = hi < c_end ? hi : c_end;
                                keep[g] = dst_of(q + g, from[g]);
                                dst[g] = edge[g];
                                for (size_t j = 0; j < NV * W; j++) edge[g][j] = 0.0f;
                                if (!first) std::memcpy(edge[g] + (from[g] - c), keep[g], (size_t) (to[g] - from[g]) * sizeof(float));
                            }
                            g++;
                        }
                        const float * up = tmp + q * nr;
                        if (packed) {
                            const uint8_t * down = (const uint8_t *) pack;
                            const size_t stride = nw * W * sizeof(float);
                            switch (g) {
                                case 1: tile_rows<ST_DTYPE_F32, 1>(nw, up, nr, down, stride, dst, first); break;
                                case 2: tile_rows<ST_DTYPE_F32, 2>(nw, up, nr, down, stride, dst, first); break;
                                case 3: tile_rows<ST_DTYPE_F32, 3>(nw, up, nr, down, stride, dst, first); break;
                                default: tile_rows<ST_DTYPE_F32, 4>(nw, up, nr, down, stride, dst, first); break;
                            }
                        } else {
                            const uint8_t * down = down0 + c * es;
                            switch (g) {
                                case 1: tile_rows<DT, 1>(nw, up, nr, down, down_stride, dst, first); break;
                                case 2: tile_rows<DT, 2>(nw, up, nr, down, down_stride, dst, first); break;
                                case 3: tile_rows<DT, 3>(nw, up, nr, down, down_stride, dst, first); break;
                                default: tile_rows<DT, 4>(nw, up, nr, down, down_stride, dst, first); break;
                            }
                        }
                        for (size_t k = 0; k < g; k++)
                            if (keep[k]) std::memcpy(keep[k], edge[k] + (from[k] - c), (size_t) (to[k] - from[k]) * sizeof(float));
                        q += g;
                    }
                }
                if (cols_v < cols) {
                    for (size_t q = 0; q < nb; q++) {
                        const uint64_t lo = lo_of(q), hi = hi_of(q);
                        const uint64_t a = lo > cols_v ? lo : cols_v;
                        if (a < hi) columns<DT>(tmp + q * nr, nr, down0 + a * es, down_stride, dst_of(q, a), (size_t) (hi - a), first);
                    }
                }
            }
        }
    }

    static bool run(const lowrank_factors & f, uint64_t cols, uint64_t i0, size_t m, float * out, float * tmp, size_t tmp_n) {
        const uint32_t rc = f.rank < RANK_CHUNK ? f.rank : RANK_CHUNK;
        if (m == 0 || cols == 0 || rc == 0 || tmp_n < rc) return false;
        switch (f.down_dtype) {
            case ST_DTYPE_F16: product<ST_DTYPE_F16>(f, cols, i0, m, out, tmp, tmp_n); return true;
            case ST_DTYPE_BF16: product<ST_DTYPE_BF16>(f, cols, i0, m, out, tmp, tmp_n); return true;
            case ST_DTYPE_F32: product<ST_DTYPE_F32>(f, cols, i0, m, out, tmp, tmp_n); return true;
            default: return false;
        }
    }
};

} // namespace
