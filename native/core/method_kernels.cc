// See method_kernels.h. Every statement rounds once (fp32 or, inside merge_pow_product, double); the
// build forbids contraction (-ffp-contract=off), so the TypeScript twin gets the same bits.
#include "method_kernels.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "kernels.h"

namespace {

// merge_pow_product's operand classes: "general" operands (y != 0, x > 0 finite, not 1) enter
// the log sum; the others are the factor pow_special gives (IEEE pow's value for them).
inline bool pow_general(float x, float y) { return y != 0.0f && x > 0.0f && x < std::numeric_limits<float>::infinity() && x != 1.0f; }

inline float pow_special(float x, float y) {
    const float inf = std::numeric_limits<float>::infinity();
    if (y == 0.0f) return 1.0f; // pow(x, ±0) = 1 for every x, NaN included
    if (x != x || y != y || x < 0.0f) return std::numeric_limits<float>::quiet_NaN();
    if (x == 0.0f) return y > 0.0f ? 0.0f : inf;
    if (x == inf) return y > 0.0f ? inf : 0.0f;
    return 1.0f; // x = 1
}

// log2 x for x > 0 finite: x = m·2^e from the bits of the double, where every fp32 value
// (subnormals too) is normal.
inline double pow_log2(float x) {
    const merge_pow_tables & T = MERGE_POW_TABLES;
    const double xd = (double) x;
    uint64_t bits;
    std::memcpy(&bits, &xd, 8);
    const int e = (int) ((bits >> 52) & 0x7ff) - 1023;
    const int i = (int) ((bits >> (52 - merge_pow_tables::LOG_BITS)) & (merge_pow_tables::LOG_N - 1));
    const uint64_t mbits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    std::memcpy(&m, &mbits, 8);
    const double r = m * T.invc[i] - 1.0; // both steps exact
    double p = T.logp[merge_pow_tables::LOG_TERMS - 1];
    for (int n = merge_pow_tables::LOG_TERMS - 2; n >= 0; n--) {
        p = p * r;
        p = p + T.logp[n];
    }
    const double lp = p * r;
    const double hi = (double) e + T.log2c[i];
    return hi + lp;
}

// 2^t rounded once to fp32 (+∞ from t >= 129, +0 from t <= −160, NaN from NaN).
inline float pow_exp2(double t) {
    const merge_pow_tables & T = MERGE_POW_TABLES;
    if (t != t) return std::numeric_limits<float>::quiet_NaN();
    if (t >= 129.0) return std::numeric_limits<float>::infinity();
    if (t <= -160.0) return 0.0f;
    const double k = std::floor(t * 16.0 + 0.5);
    const int j = (int) k & (merge_pow_tables::EXP_N - 1);
    const int k_int = ((int) k - j) / merge_pow_tables::EXP_N; // exact: ⌊k/16⌋
    const double f = t - k * 0.0625;                            // exact
    double w = T.expp[merge_pow_tables::EXP_TERMS - 1];
    for (int n = merge_pow_tables::EXP_TERMS - 2; n >= 0; n--) {
        w = w * f;
        w = w + T.expp[n];
    }
    const double v = w * T.exp2j[j];
    return (float) std::ldexp(v, k_int); // exact scaling, then the one fp32 rounding
}

} // namespace

float merge_pow_product(float x1, float y1, float x2, float y2) {
    const bool g1 = pow_general(x1, y1), g2 = pow_general(x2, y2);
    const double t1 = g1 ? (double) y1 * pow_log2(x1) : 0.0;
    const double t2 = g2 ? (double) y2 * pow_log2(x2) : 0.0;
    float m = pow_exp2(t1 + t2);
    if (!g1) m = m * pow_special(x1, y1);
    if (!g2) m = m * pow_special(x2, y2);
    return m;
}

namespace {

// |x| without touching a NaN's sign bit (fabs clears it; the TypeScript engine cannot, portably):
// both engines then carry the same NaN bits. ±0 give +0.
inline float absf(float x) { return x < 0.0f ? -x : (x == 0.0f ? 0.0f : x); }

// -m for a number, a NaN unchanged (for the same reason).
inline float negf(float x) { return x == x ? -x : x; }

// SuperMerger "TD" (scripts/mergers/mergers.py): A + sign(B−C)·|B−A|/(|B−C|+|B−A|)·|B−C| · (α·1.8);
// p0 = α·1.8 (rounded to fp32 once, as torch does with the Python scalar).
void train_difference(float * r, const float * const * x, const float * p, size_t n) {
    const float * a = x[0], * b = x[1], * c = x[2];
    for (size_t i = 0; i < n; i++) {
        const float t0 = b[i] - c[i];
        const float d0 = absf(t0);
        const float d1 = absf(b[i] - a[i]);
        const float s = d0 + d1;
        const float q = s != 0.0f ? d1 / s : 0.0f;
        // sign(B−C)·|q| (q is >= 0 or NaN), written without a product by ±1, which compilers
        // and JITs may turn into a negation with another NaN sign bit.
        const float sc = t0 > 0.0f ? q : (t0 < 0.0f ? negf(q) : 0.0f * q);
        const float nd = sc * d0;
        const float v = nd * p[0];
        r[i] = a[i] + v;
    }
}

// sd-meh triple_sum: (1−α−β)·A + α·B + β·C, added left to right; p = {1−α−β, α, β}.
void triple_sum(float * r, const float * const * x, const float * p, size_t n) {
    const float * a = x[0], * b = x[1], * c = x[2];
    for (size_t i = 0; i < n; i++) {
        const float u = a[i] * p[0];
        const float v = b[i] * p[1];
        const float w = c[i] * p[2];
        const float uv = u + v;
        r[i] = uv + w;
    }
}

// sd-meh sum_twice: (1−β)·((1−α)·A + α·B) + β·C; p = {1−α, α, 1−β, β}.
void sum_twice(float * r, const float * const * x, const float * p, size_t n) {
    const float * a = x[0], * b = x[1], * c = x[2];
    for (size_t i = 0; i < n; i++) {
        const float u = a[i] * p[0];
        const float v = b[i] * p[1];
        const float ab = u + v;
        const float s = ab * p[2];
        const float t = c[i] * p[3];
        r[i] = s + t;
    }
}

// sd-meh multiply_difference: C + copysign(|A−C|^(1−α)·|B−C|^α, (1−β)·A + β·B − C);
// p = {1−α, α, 1−β, β}. The product of powers is one evaluation, rounded once (merge_pow_product;
// sd-meh rounds each power and the product, in torch's fp32: within 1.5 ulp of ours). The sign is negative iff that difference is < 0 (a zero or NaN counts
// as positive: torch copies the sign bit, which differs only for −0 and NaN).
void multiply_difference(float * r, const float * const * x, const float * p, size_t n) {
    const float * a = x[0], * b = x[1], * c = x[2];
    for (size_t i = 0; i < n; i++) {
        const float da = absf(a[i] - c[i]);
        const float db = absf(b[i] - c[i]);
        const float m = merge_pow_product(da, p[0], db, p[1]);
        const float u = a[i] * p[2];
        const float v = b[i] * p[3];
        const float w = u + v;
        const float sg = w - c[i];
        const float d = sg < 0.0f ? negf(m) : m;
        r[i] = c[i] + d;
    }
}

// sd-meh similarity_add_difference: s = β·((A·B/max(|A|,|B|)² + 1)/2), β where that is NaN;
// (1−s)·(A + α·(B−C)) + s·((1−α/2)·A + (α/2)·B); p = {α, β, 1−α/2, α/2}.
void similarity_add_difference(float * r, const float * const * x, const float * p, size_t n) {
    const float * a = x[0], * b = x[1], * c = x[2];
    for (size_t i = 0; i < n; i++) {
        const float prod = a[i] * b[i];
        const float aa = absf(a[i]);
        const float bb = absf(b[i]);
        const float th = aa > bb ? aa : bb;
        const float th2 = th * th;
        float q = prod / th2;
        q = q + 1.0f;
        q = q / 2.0f;
        float s = q * p[1];
        if (s != s) s = p[1];
        float t = b[i] - c[i];
        t = p[0] * t;
        const float diff = a[i] + t;
        const float u = p[2] * a[i];
        const float v = p[3] * b[i];
        const float sum = u + v;
        const float k = 1.0f - s;
        const float y0 = k * diff;
        const float y1 = s * sum;
        r[i] = y0 + y1;
    }
}

// IEEE 754-2019 minimum/maximum (as torch.minimum/maximum and Math.min/max): a NaN operand is
// the result, and −0 < +0.
inline float minf(float x, float y) {
    if (x != x) return x;
    if (y != y) return y;
    if (x < y) return x;
    if (y < x) return y;
    return std::signbit(x) ? x : y;
}

inline float maxf(float x, float y) {
    if (x != x) return x;
    if (y != y) return y;
    if (x > y) return x;
    if (y > x) return y;
    return std::signbit(x) ? y : x;
}

// sd-mecha's clip to A and B, torch.clamp(x, minimum(A,B), maximum(A,B)).
void clamp(float * r, const float * const * x, const float *, size_t n) {
    const float * v = x[0], * a = x[1], * b = x[2];
    for (size_t i = 0; i < n; i++) r[i] = minf(maxf(v[i], minf(a[i], b[i])), maxf(a[i], b[i]));
}

} // namespace

merge_method_fn merge_method_kernel(uint32_t kernel) {
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

merge_method_fn merge_method_kernel_for(const merge_kernels * kernels, uint32_t kernel) {
    if (kernels && kernels->method)
        if (const merge_method_fn f = kernels->method(kernel)) return f;
    return merge_method_kernel(kernel);
}
