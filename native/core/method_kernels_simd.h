// The element-wise method kernels (method_kernels.cc) over a vector traits type V, included by
// kernels_simd.h in each ISA's object. Each kernel does the scalar kernel's operations in the
// same order, lane by lane, so every lane rounds as the scalar statement does; the scalar
// branches become masks and blends with the same NaN and zero rules. Leftover elements (n not a
// multiple of W) run the scalar kernel itself.
//
// pow: merge_powf's algorithm in double lanes, step for step (the same table entries by
// gathers, the same polynomials, floor, an exact 2^k scaling and the one rounding to fp32), so
// the same bits. Each W fp32 lanes are widened to two halves of W/2 doubles.
//
// Besides kernels_simd.h's members, V provides: div, zero, set1; masks vm (lt, gt, le, eq:
// ordered compares; unord; signbit), m_or, m_andnot(a, b) = ~a & b, blend(m, a, b) = m ? b : a,
// clear_sign, flip_sign; and doubles
// vd with masks dm: d_lo/d_hi (widen half the lanes), d_narrow (round both halves to fp32),
// d_add, d_sub, d_mul, d_set1, d_min, d_max, d_floor, d_ge, d_le, d_blend, d_exponent (the
// unbiased exponent of a normal double, as a double), d_mantissa (in [1, 2)), d_pow2 (2^k for
// an integral k in [-1022, 1023]), and 64-bit lane indices vix: d_top_bits(x, b) (the top b
// mantissa bits), d_low_bits(k, b) (the low b bits of an integral |k| < 2^51, two's complement)
// and d_gather(table, i) (entry i of a 16-entry table).
#pragma once

#include <cstring>

#include "kernels.h"
#include "method_kernels.h"

namespace {

template <class V>
struct simd_methods {
    typedef typename V::vf vf;
    typedef typename V::vm vm;
    typedef typename V::vd vd;
    static constexpr size_t W = V::W;

    // absf/negf of method_kernels.cc: |x| and -x that leave a NaN as it is; absf(±0) = +0.
    static vf absf(vf x) { return V::blend(V::le(x, V::zero()), x, V::clear_sign(x)); }
    static vf negf(vf x) { return V::blend(V::eq(x, x), x, V::flip_sign(x)); }

    /** merge_powf on the W/2 doubles of one half: the general path (x > 0 finite, not 1). */
    static vd pow_half(vd x, double y) {
        typedef merge_pow_tables P;
        const P & T = MERGE_POW_TABLES;
        const typename V::vix i = V::d_top_bits(x, P::LOG_BITS);
        const vd e = V::d_exponent(x);
        const vd m = V::d_mantissa(x);
        const vd r = V::d_sub(V::d_mul(m, V::d_gather(T.invc, i)), V::d_set1(1.0));
        vd p = V::d_set1(T.logp[P::LOG_TERMS - 1]);
        for (int n = P::LOG_TERMS - 2; n >= 0; n--) {
            p = V::d_mul(p, r);
            p = V::d_add(p, V::d_set1(T.logp[n]));
        }
        const vd lp = V::d_mul(p, r);
        const vd hi = V::d_add(e, V::d_gather(T.log2c, i));
        const vd log2_x = V::d_add(hi, lp);
        const vd t = V::d_mul(V::d_set1(y), log2_x);
        // Lanes past the cut-offs are replaced below; clamping keeps their 2^k representable.
        const vd tc = V::d_min(V::d_max(t, V::d_set1(-160.0)), V::d_set1(129.0));
        static_assert(P::EXP_N == 16, "the 0.0625 and 16.0 below");
        const vd k = V::d_floor(V::d_add(V::d_mul(tc, V::d_set1(16.0)), V::d_set1(0.5)));
        const vd k16 = V::d_mul(k, V::d_set1(0.0625));
        const vd k_int = V::d_floor(k16); // (k − (k & 15))/16
        const vd f = V::d_sub(tc, k16);
        const vd u = V::d_mul(f, V::d_set1(MERGE_POW_LN2));
        vd w = V::d_set1(T.expp[P::EXP_TERMS - 1]);
        for (int n = P::EXP_TERMS - 2; n >= 0; n--) {
            w = V::d_mul(w, u);
            w = V::d_add(w, V::d_set1(T.expp[n]));
        }
        const vd v = V::d_mul(w, V::d_gather(T.exp2j, V::d_low_bits(k, P::EXP_BITS)));
        vd res = V::d_mul(v, V::d_pow2(k_int));
        res = V::d_blend(V::d_ge(t, V::d_set1(129.0)), res, V::d_set1(__builtin_inf()));
        return V::d_blend(V::d_le(t, V::d_set1(-160.0)), res, V::d_set1(0.0));
    }

    /** merge_powf(x[i], y) in every lane. */
    static vf pow(vf x, float y) {
        if (y == 0.0f) return V::set1(1.0f);
        if (y != y || y - y != 0.0f) { // NaN or infinite y: never a validated parameter
            float xs[W], rs[W];
            V::storeu(xs, x);
            for (size_t i = 0; i < W; i++) rs[i] = merge_powf(xs[i], y);
            return V::loadu(rs);
        }
        const double yd = (double) y;
        vf r = V::d_narrow(pow_half(V::d_lo(x), yd), pow_half(V::d_hi(x), yd));
        const float inf = __builtin_inff();
        const vm nan = V::m_or(V::unord(x, x), V::lt(x, V::zero()));
        r = V::blend(V::eq(x, V::zero()), r, V::set1(y > 0.0f ? 0.0f : inf));
        r = V::blend(V::eq(x, V::set1(inf)), r, V::set1(y > 0.0f ? inf : 0.0f));
        r = V::blend(V::eq(x, V::set1(1.0f)), r, V::set1(1.0f));
        return V::blend(nan, r, V::set1(__builtin_nanf("")));
    }

    /** The scalar kernel on elements [i, n), so tails give the scalar bits by construction. */
    static void tail(uint32_t kernel, float * r, const float * const * x, const float * p, size_t i, size_t n) {
        if (i >= n) return;
        const float * xs[3] = {x[0] + i, x[1] + i, x[2] + i};
        merge_method_kernel(kernel)(r + i, xs, p, n - i);
    }

    static void train_difference(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        const vf p0 = V::set1(p[0]), zero = V::zero();
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf va = V::loadu(a + i), vb = V::loadu(b + i), vc = V::loadu(c + i);
            const vf t0 = V::sub(vb, vc);
            const vf d0 = absf(t0);
            const vf d1 = absf(V::sub(vb, va));
            const vf s = V::add(d0, d1);
            const vf q = V::blend(V::eq(s, zero), V::div(d1, s), zero);
            vf sc = V::blend(V::lt(t0, zero), V::mul(zero, q), negf(q));
            sc = V::blend(V::gt(t0, zero), sc, q);
            const vf nd = V::mul(sc, d0);
            const vf v = V::mul(nd, p0);
            V::storeu(r + i, V::add(va, v));
        }
        tail(MERGE_KERNEL_TRAIN_DIFFERENCE, r, x, p, i, n);
    }

    static void triple_sum(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        const vf p0 = V::set1(p[0]), p1 = V::set1(p[1]), p2 = V::set1(p[2]);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf u = V::mul(V::loadu(a + i), p0);
            const vf v = V::mul(V::loadu(b + i), p1);
            const vf w = V::mul(V::loadu(c + i), p2);
            V::storeu(r + i, V::add(V::add(u, v), w));
        }
        tail(MERGE_KERNEL_TRIPLE_SUM, r, x, p, i, n);
    }

    static void sum_twice(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        const vf p0 = V::set1(p[0]), p1 = V::set1(p[1]), p2 = V::set1(p[2]), p3 = V::set1(p[3]);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf ab = V::add(V::mul(V::loadu(a + i), p0), V::mul(V::loadu(b + i), p1));
            V::storeu(r + i, V::add(V::mul(ab, p2), V::mul(V::loadu(c + i), p3)));
        }
        tail(MERGE_KERNEL_SUM_TWICE, r, x, p, i, n);
    }

    static void multiply_difference(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        const vf p2 = V::set1(p[2]), p3 = V::set1(p[3]), zero = V::zero();
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf va = V::loadu(a + i), vb = V::loadu(b + i), vc = V::loadu(c + i);
            const vf da = absf(V::sub(va, vc));
            const vf db = absf(V::sub(vb, vc));
            const vf m = V::mul(pow(da, p[0]), pow(db, p[1]));
            const vf w = V::add(V::mul(va, p2), V::mul(vb, p3));
            const vf sg = V::sub(w, vc);
            const vf d = V::blend(V::lt(sg, zero), m, negf(m));
            V::storeu(r + i, V::add(vc, d));
        }
        tail(MERGE_KERNEL_MULTIPLY_DIFFERENCE, r, x, p, i, n);
    }

    static void similarity_add_difference(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        const vf p0 = V::set1(p[0]), p1 = V::set1(p[1]), p2 = V::set1(p[2]), p3 = V::set1(p[3]);
        const vf one = V::set1(1.0f), two = V::set1(2.0f);
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf va = V::loadu(a + i), vb = V::loadu(b + i), vc = V::loadu(c + i);
            const vf prod = V::mul(va, vb);
            const vf aa = absf(va), bb = absf(vb);
            const vf th = V::blend(V::gt(aa, bb), bb, aa);
            const vf th2 = V::mul(th, th);
            vf q = V::div(prod, th2);
            q = V::add(q, one);
            q = V::div(q, two);
            vf s = V::mul(q, p1);
            s = V::blend(V::unord(s, s), s, p1);
            vf t = V::sub(vb, vc);
            t = V::mul(p0, t);
            const vf diff = V::add(va, t);
            const vf sum = V::add(V::mul(p2, va), V::mul(p3, vb));
            const vf k = V::sub(one, s);
            V::storeu(r + i, V::add(V::mul(k, diff), V::mul(s, sum)));
        }
        tail(MERGE_KERNEL_SIMILARITY_ADD_DIFFERENCE, r, x, p, i, n);
    }

    // minf/maxf of method_kernels.cc (IEEE 754-2019 minimum/maximum): a NaN operand is the
    // result (x's when both are), −0 < +0; between equal values the one signbit(x) picks.
    static vf minf(vf x, vf y) {
        const vm pick_x = V::m_or(V::lt(x, y), V::m_andnot(V::lt(y, x), V::signbit(x)));
        vf r = V::blend(pick_x, y, x);
        r = V::blend(V::unord(y, y), r, y);
        return V::blend(V::unord(x, x), r, x);
    }
    static vf maxf(vf x, vf y) {
        const vm pick_y = V::m_or(V::gt(y, x), V::m_andnot(V::gt(x, y), V::signbit(x)));
        vf r = V::blend(pick_y, x, y);
        r = V::blend(V::unord(y, y), r, y);
        return V::blend(V::unord(x, x), r, x);
    }

    static void clamp(float * r, const float * const * x, const float * p, size_t n) {
        const float * v = x[0], * a = x[1], * b = x[2];
        size_t i = 0;
        for (; i + W <= n; i += W) {
            const vf va = V::loadu(a + i), vb = V::loadu(b + i);
            V::storeu(r + i, minf(maxf(V::loadu(v + i), minf(va, vb)), maxf(va, vb)));
        }
        tail(MERGE_KERNEL_CLAMP, r, x, p, i, n);
    }

    static merge_method_fn lookup(uint32_t kernel) {
        switch (kernel) {
            case MERGE_KERNEL_TRAIN_DIFFERENCE: return train_difference;
            case MERGE_KERNEL_TRIPLE_SUM: return triple_sum;
            case MERGE_KERNEL_SUM_TWICE: return sum_twice;
            case MERGE_KERNEL_MULTIPLY_DIFFERENCE: return multiply_difference;
            case MERGE_KERNEL_SIMILARITY_ADD_DIFFERENCE: return similarity_add_difference;
            case MERGE_KERNEL_CLAMP: return clamp;
            default: return nullptr;
        }
    }
};

} // namespace
