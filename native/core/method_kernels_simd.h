// The element-wise method kernels (method_kernels.cc) over a vector traits type V, included by
// kernels_simd.h in each ISA's object. Each kernel does the scalar kernel's operations in the
// same order, lane by lane, so every lane rounds as the scalar statement does; the scalar
// branches become masks and blends with the same NaN and zero rules. Leftover elements (n not a
// multiple of W) run the scalar kernel itself.
//
// pow product: merge_pow_product's algorithm in double lanes, step for step (the same table
// entries, looked up by register permutes, the same polynomials, floor, an exact 2^k scaling and
// the one rounding to fp32), so the same bits. Each W fp32 lanes give two halves of W/2 doubles,
// and several vectors' logs and exps run side by side (log2_halves, exp2_halves).
//
// Besides kernels_simd.h's members, V provides: div, zero, set1; masks vm (lt, gt, le, eq:
// ordered compares; unord; signbit), m_or, m_andnot(a, b) = ~a & b, blend(m, a, b) = m ? b : a,
// clear_sign, flip_sign, all_pow_general (every lane a normal fp32 > 0, finite, not 1: fp32
// subnormals take the special path), all_lanes(m); and doubles vd: d_lo/d_hi (widen half the
// lanes), d_narrow (round both halves to fp32), d_add, d_sub, d_mul, d_set1, d_min, d_max,
// d_floor16 (⌊16x⌋/16); 64-bit lane integers vix: d_int_bits_div16(k/16) (the bits of
// k/16 + 1.5·2^48 for an integral |k| < 2^51, whose low bits are k's in two's complement),
// d_scale_pow2_div16(v, d_int_bits_div16(k/16)) (v·2^⌊k/16⌋, exact, for k in [−2560, 2064] as
// pow's clamp leaves it and v in [1, 2)); the pow tables in V's lookup form, pow_tabs =
// load_pow_tabs(MERGE_POW_TABLES), and their lookups, each giving the two halves of doubles of
// an fp32 vector x (lanes > 0 finite; SUB false: every lane normal): log_m_invc<SUB>(x, tb, m, c)
// (the mantissa in [1, 2) of each lane and invc[i], i its top LOG_BITS mantissa bits),
// log_e_log2c<SUB>(x, tb, e, c) (the unbiased exponent as a double and log2c[i]), and
// exp2j_pair(tb, kb0, kb1, v0, v1) (exp2j of the low 4 bits of each lane of two vix); MD_UNROLL
// (fp32 vectors per multiply-difference step).
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

    /** The three pow tables, loaded once per kernel call into V's lookup form. */
    typedef typename V::pow_tabs pow_tables;
    static pow_tables load_pow_tables() { return V::load_pow_tabs(MERGE_POW_TABLES); }

    /**
     * h[2j], h[2j + 1] ← log2 of the two halves of x[j] for N fp32 vectors at once (each lane
     * > 0 finite; SUB false: normal), merge_pow_product's pow_log2 rounding for rounding. The
     * 2N chains run side by side because each one's work is a chain of dependent operations (a
     * Horner polynomial) whose latency, not the arithmetic, limits one vector.
     */
    template <int N, bool SUB>
    static void log2_halves(const vf (&x)[N], vd (&h)[2 * N], const pow_tables & tb) {
        typedef merge_pow_tables P;
        const P & T = MERGE_POW_TABLES;
        static_assert(P::LOG_N == 16, "16-entry tables");
        vd r[2 * N], acc[2 * N];
#pragma GCC unroll 16
        for (int j = 0; j < N; j++) {
            vd m[2], c[2];
            V::template log_m_invc<SUB>(x[j], tb, m, c);
#pragma GCC unroll 2
            for (int k = 0; k < 2; k++) {
                r[2 * j + k] = V::d_sub(V::d_mul(m[k], c[k]), V::d_set1(1.0));
                acc[2 * j + k] = V::d_set1(T.logp[P::LOG_TERMS - 1]);
            }
        }
#pragma GCC unroll 16
        for (int n = P::LOG_TERMS - 2; n >= 0; n--) {
#pragma GCC unroll 16
            for (int j = 0; j < 2 * N; j++) acc[j] = V::d_add(V::d_mul(acc[j], r[j]), V::d_set1(T.logp[n]));
        }
#pragma GCC unroll 16
        for (int j = 0; j < N; j++) {
            // e + log2c[i] only now: fewer registers live through the polynomial above
            vd e[2], c[2];
            V::template log_e_log2c<SUB>(x[j], tb, e, c);
#pragma GCC unroll 2
            for (int k = 0; k < 2; k++) h[2 * j + k] = V::d_add(V::d_add(e[k], c[k]), V::d_mul(acc[2 * j + k], r[2 * j + k]));
        }
    }

    /**
     * t[j] ← 2^t[j] for K vectors of doubles (finite t), merge_pow_product's pow_exp2 before its
     * fp32 rounding. Its cut-offs (t >= 129 gives +∞, t <= −160 gives +0) come from clamping t
     * to [−160, 129]: 2^129 and 2^−160 are exact here (f = 0, k mod 16 = 0) and round to +∞ and
     * +0 in the final fp32 rounding, and t inside the range is left as it is. CLAMP false: the
     * caller knows every t is inside (see pow_in_range).
     */
    template <int K, bool CLAMP>
    static void exp2_halves(vd (&t)[K], const pow_tables & tb) {
        typedef merge_pow_tables P;
        const P & T = MERGE_POW_TABLES;
        static_assert(P::EXP_N == 16, "16-entry tables, and the 1/32 and d_floor16 below");
        static_assert(K % 2 == 0, "the table is looked up for two vectors at once");
        vd f[K], acc[K];
        typename V::vix kb[K];
#pragma GCC unroll 16
        for (int j = 0; j < K; j++) {
            const vd tc = CLAMP ? V::d_min(V::d_max(t[j], V::d_set1(-160.0)), V::d_set1(129.0)) : t[j];
            // k/16 = ⌊16t + ½⌋/16 = ⌊16(t + 1/32)⌋/16: t + 1/32 rounds as 16t + ½ does, scaled by 1/16
            const vd k16 = V::d_floor16(V::d_add(tc, V::d_set1(0.03125)));
            kb[j] = V::d_int_bits_div16(k16);
            f[j] = V::d_sub(tc, k16);
            acc[j] = V::d_set1(T.expp[P::EXP_TERMS - 1]);
        }
#pragma GCC unroll 16
        for (int n = P::EXP_TERMS - 2; n >= 0; n--) {
#pragma GCC unroll 16
            for (int j = 0; j < K; j++) acc[j] = V::d_add(V::d_mul(acc[j], f[j]), V::d_set1(T.expp[n]));
        }
#pragma GCC unroll 16
        for (int j = 0; j < K; j += 2) {
            vd c0, c1;
            V::exp2j_pair(tb, kb[j], kb[j + 1], c0, c1); // low 4 bits of k: k mod 16
            t[j] = V::d_scale_pow2_div16(V::d_mul(acc[j], c0), kb[j]);
            t[j + 1] = V::d_scale_pow2_div16(V::d_mul(acc[j + 1], c1), kb[j + 1]);
        }
    }

    /**
     * pow_special of merge_pow_product over the fp32 lanes: IEEE pow's value for the special
     * lanes (x NaN, 0, ∞ or 1, or y = 0), 1 in the others; y is finite (the kernels check that
     * before the vector loop).
     */
    static vf pow_special(vf x, float y) {
        const float inf = __builtin_inff();
        const vm nan = V::m_or(V::unord(x, x), V::lt(x, V::zero()));
        vf r = V::set1(1.0f);
        r = V::blend(V::eq(x, V::zero()), r, V::set1(y > 0.0f ? 0.0f : inf));
        r = V::blend(V::eq(x, V::set1(inf)), r, V::set1(y > 0.0f ? inf : 0.0f));
        r = V::blend(nan, r, V::set1(__builtin_nanf("")));
        return V::blend(V::eq(V::set1(y), V::zero()), r, V::set1(1.0f)); // pow(x, ±0) = 1, NaN x too
    }

    /** 1 in the lanes that enter the log sum (x > 0 finite, not 1), 0 in the others. */
    static vf pow_general_lanes(vf x) {
        const vm special = V::m_or(V::m_or(V::le(x, V::zero()), V::unord(x, x)), V::m_or(V::eq(x, V::set1(__builtin_inff())), V::eq(x, V::set1(1.0f))));
        return V::blend(special, V::set1(1.0f), V::zero());
    }

    /** Whether the vector pow handles exponent y (finite); NaN and ±∞ exponents run the scalar kernel. */
    static bool pow_vector_exponent(float y) { return y - y == 0.0f; }

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

    /**
     * m[u] = merge_pow_product(da, y1, db, y2) lane by lane for U vectors: 4·U vectors of
     * doubles in log chains side by side, then 2·U in exp chains. SPECIAL: some lane is not on
     * the general path; its operand then enters the log sum as x = 1 times 0 (a zero, as the
     * scalar's 0.0: t is the other term, or ±0 whose 2^t is 1 either way) and its pow_special
     * factor is multiplied in after, as the scalar does (a factor 1 in general lanes is exact).
     */
    template <int U, bool SPECIAL, bool CLAMP>
    static void pow_product(vf (&m)[U], const vf (&da)[U], const vf (&db)[U], float y1, float y2, const pow_tables & tb) {
        vf xs[2 * U];
        vf g1[U], g2[U];
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            vf x1 = da[u], x2 = db[u];
            if (SPECIAL) {
                g1[u] = pow_general_lanes(x1), g2[u] = pow_general_lanes(x2);
                x1 = V::blend(V::eq(g1[u], V::zero()), x1, V::set1(1.0f));
                x2 = V::blend(V::eq(g2[u], V::zero()), x2, V::set1(1.0f));
            }
            xs[u] = x1, xs[U + u] = x2;
        }
        vd h[4 * U];
        log2_halves<2 * U, SPECIAL>(xs, h, tb); // the special path's general lanes may be subnormal
        vd t[2 * U];
        const vd vy1 = V::d_set1((double) y1), vy2 = V::d_set1((double) y2);
#pragma GCC unroll 16
        for (int j = 0; j < 2 * U; j++) {
            vd t1 = V::d_mul(vy1, h[j]), t2 = V::d_mul(vy2, h[2 * U + j]);
            if (SPECIAL) {
                t1 = V::d_mul(t1, j % 2 ? V::d_hi(g1[j / 2]) : V::d_lo(g1[j / 2]));
                t2 = V::d_mul(t2, j % 2 ? V::d_hi(g2[j / 2]) : V::d_lo(g2[j / 2]));
            }
            t[j] = V::d_add(t1, t2);
        }
        exp2_halves<2 * U, CLAMP>(t, tb);
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            m[u] = V::d_narrow(t[2 * u], t[2 * u + 1]);
            if (SPECIAL) m[u] = V::mul(V::mul(m[u], pow_special(da[u], y1)), pow_special(db[u], y2));
        }
    }

    /**
     * Whether y1·log2 x1 + y2·log2 x2 stays inside pow's cut-offs (−160, 129) for every fp32 x
     * (log2 x in [−149, 128)): y1, y2 >= 0 with y1 + y2 <= 1 (α in [0, 1]; the sum of the fp32
     * 1 − α and α can exceed 1 by an ulp), so exp2_halves needs no clamp.
     */
    static bool pow_in_range(float y1, float y2) { return y1 >= 0.0f && y2 >= 0.0f && (double) y1 + (double) y2 <= 1.0 + 0x1p-20; }

    /**
     * Whether x1 = 0 makes the product +0 whatever the finite x2: x1^y1 = 0 (y1 > 0) and
     * x2^y2 finite (0 <= y2 <= 1: at most max(x2, 1) before its rounding, which the 0.505 ulp
     * bound keeps below the overflow threshold), so (2^t·0)·s2 with s2 in {0, 1} is +0. Then a
     * step of identical A and C (common: an unchanged text encoder or VAE) skips the pow.
     */
    static bool zero_kills(float y1, float y2) { return y1 > 0.0f && y2 >= 0.0f && y2 <= 1.0f; }

    struct md_params {
        float y1, y2;
        bool in_range, zero1, zero2; // pow_in_range; zero_kills(y1, y2), zero_kills(y2, y1)
    };

    /**
     * The special path's common case, run at the general path's cost: every lane is general or
     * has an operand exactly 0 whose zero_kills holds (A = C or B = C in places, as in a
     * fine-tune that left some weights as they were, or stored them in fp16). Such a lane's
     * product is +0 exactly, as in the scalar: its other factor is finite (2^t with t < 129, or
     * pow_special's 1 or 0) and pow_special(0, y > 0) is +0. So its zero operand is replaced by
     * 2 (any general value: its term is thrown away), the general pow runs, and the lane is set
     * to +0 after. False, with m untouched, when some lane needs the full special path
     * (subnormal, 1, ∞ or NaN operands; a zero whose zero_kills does not hold).
     */
    template <int U>
    static bool zero_lanes(vf (&m)[U], const vf (&da)[U], const vf (&db)[U], const md_params & q, const pow_tables & tb) {
        if (!q.zero1 && !q.zero2) return false;
        const vf zero = V::zero(), two = V::set1(2.0f);
        const vm none = V::lt(zero, zero);
        vf xa[U], xb[U];
        vm z[U];
        bool ok = true;
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            const vm za = q.zero1 ? V::eq(da[u], zero) : none, zb = q.zero2 ? V::eq(db[u], zero) : none;
            z[u] = V::m_or(za, zb);
            xa[u] = q.zero1 ? V::blend(za, da[u], two) : da[u];
            xb[u] = q.zero2 ? V::blend(zb, db[u], two) : db[u];
            ok = ok && V::all_pow_general(xa[u]) && V::all_pow_general(xb[u]);
        }
        if (!ok) return false;
        if (q.in_range) pow_product<U, false, false>(m, xa, xb, q.y1, q.y2, tb);
        else pow_product<U, false, true>(m, xa, xb, q.y1, q.y2, tb);
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) m[u] = V::blend(z[u], m[u], zero);
        return true;
    }

    /** Elements [i, i + U·W) (U = V::MD_UNROLL; then U = 1 for what is left of full vectors). */
    template <int U>
    static void multiply_difference_step(float * r, const float * a, const float * b, const float * c, const float * p, const md_params & q, const pow_tables & tb) {
        const vf p2 = V::set1(p[2]), p3 = V::set1(p[3]), zero = V::zero(), inf = V::set1(__builtin_inff());
        vf va[U], vb[U], vc[U], da[U], db[U], m[U];
        bool general = true;
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            va[u] = V::loadu(a + u * W), vb[u] = V::loadu(b + u * W), vc[u] = V::loadu(c + u * W);
            // |A − C| for the pow only: a NaN's sign bit does not matter there (pow_special's NaN)
            da[u] = V::clear_sign(V::sub(va[u], vc[u]));
            db[u] = V::clear_sign(V::sub(vb[u], vc[u]));
            general = general && V::all_pow_general(da[u]) && V::all_pow_general(db[u]);
        }
        // y = ±0 needs no special lanes: its general lanes' term is ±0, pow_special's factor 1
        if (general) {
            if (q.in_range) pow_product<U, false, false>(m, da, db, q.y1, q.y2, tb);
            else pow_product<U, false, true>(m, da, db, q.y1, q.y2, tb);
        } else {
            bool zero1 = q.zero1, zero2 = q.zero2;
#pragma GCC unroll 8
            for (int u = 0; u < U; u++) {
                zero1 = zero1 && V::all_lanes(V::eq(da[u], zero)) && V::all_lanes(V::lt(db[u], inf));
                zero2 = zero2 && V::all_lanes(V::eq(db[u], zero)) && V::all_lanes(V::lt(da[u], inf));
            }
            if (zero1 || zero2) {
#pragma GCC unroll 8
                for (int u = 0; u < U; u++) m[u] = zero;
            } else if (!zero_lanes<U>(m, da, db, q, tb)) {
                pow_product<U, true, true>(m, da, db, q.y1, q.y2, tb);
            }
        }
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            const vf w = V::add(V::mul(va[u], p2), V::mul(vb[u], p3));
            const vf sg = V::sub(w, vc[u]);
            const vf d = V::blend(V::lt(sg, zero), m[u], general ? V::flip_sign(m[u]) : negf(m[u])); // no NaN m on the general path
            V::storeu(r + u * W, V::add(vc[u], d));
        }
    }

    static void multiply_difference(float * r, const float * const * x, const float * p, size_t n) {
        const float * a = x[0], * b = x[1], * c = x[2];
        size_t i = 0;
        if (pow_vector_exponent(p[0]) && pow_vector_exponent(p[1])) {
            constexpr int U = V::MD_UNROLL;
            const pow_tables tb = load_pow_tables();
            const md_params q{p[0], p[1], pow_in_range(p[0], p[1]), zero_kills(p[0], p[1]), zero_kills(p[1], p[0])};
            for (; i + U * W <= n; i += U * W) multiply_difference_step<U>(r + i, a + i, b + i, c + i, p, q, tb);
            for (; i + W <= n; i += W) multiply_difference_step<1>(r + i, a + i, b + i, c + i, p, q, tb);
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
