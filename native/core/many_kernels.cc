#include "many_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "det_math.h"
#include "kernels.h"
#include "philox.h"

namespace {

inline uint32_t magnitude_key(float x) {
    uint32_t b;
    std::memcpy(&b, &x, 4);
    return b & 0x7fffffffu;
}

/** keep ? x : x·0 (what x·1 or x·0 gives, x·1 being x: d is never a signalling NaN), by bit masks: no branch. */
inline float keep_or_zero(bool keep, float x) {
    const float z = x * 0.0f;
    uint32_t bx, bz;
    std::memcpy(&bx, &x, 4);
    std::memcpy(&bz, &z, 4);
    const uint32_t m = 0u - (uint32_t) keep;
    const uint32_t b = (bx & m) | (bz & ~m);
    float r;
    std::memcpy(&r, &b, 4);
    return r;
}

inline float sign_of(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

/**
 * Every NaN these kernels store is the positive quiet NaN (0x7fc00000): with two NaN operands
 * of different signs (an input's NaN, and the −NaN of inf − inf or 0·inf) which one an addition
 * returns depends on the operand order the compiler or the JIT picked, so the bits could differ
 * between engines. NaN counts (MergeReport.nonFinite) are unchanged.
 */
inline float canonical(float v) { return v != v ? std::numeric_limits<float>::quiet_NaN() : v; }

/**
 * Generalised task arithmetic (mergekit generalized_task_arithmetic.py), per element:
 *   δj = Mj − base; TRIM: δj = δj·[key(δj) ≥ tj]; DROP: δj = δj·[word ≥ threshold j], then
 *   RESCALE: δj = δj / keep j; wδj = δj·wj;
 *   CONSENSUS: s = Σ wδj (or, BY_COUNT, Σ sign(wδj)), elected = s ≥ 0 ? 1 : −1,
 *     cj = [sign(wδj) = elected]; mixed = Σ wδj·cj; divisor = Σ wj·cj, 1 where it is 0;
 *   otherwise mixed = Σ wδj, divisor = Σ wj, 1 where |divisor| < 1e-8;
 *   NORMALIZE: mixed = mixed / divisor; r = base + mixed·λ.
 * Sums run j = 1..N in order, starting from the first term.
 */
void task_merge(float * r, const merge_many_args & a, size_t n_total) {
    const uint32_t models = a.n_args - 1;
    const float * w = a.params;
    const float lambda = a.params[models];
    const float * keep = a.params + models + 1;
    const uint32_t flags = a.ints[0];
    const uint32_t * threshold = a.ints + 4;
    const bool trim = flags & TASK_MERGE_TRIM, drop = flags & TASK_MERGE_DROP, rescale = flags & TASK_MERGE_RESCALE;
    const bool consensus = flags & TASK_MERGE_CONSENSUS, by_count = flags & TASK_MERGE_BY_COUNT, normalize = flags & TASK_MERGE_NORMALIZE;
    uint32_t trim_key[MERGE_MAX_ARGS] = {};
    if (trim)
        for (uint32_t j = 0; j < models; j++) {
            // A key in [0, 2^31] (kth-magnitude); anything else (a job giving another statistic) keeps nothing.
            const double v = a.stats[j];
            trim_key[j] = v >= 0 && v <= 2147483648.0 ? (uint32_t) v : 2147483648u;
        }
    float divisor_all = 0;
    for (uint32_t j = 0; j < models; j++) divisor_all = j == 0 ? w[0] : divisor_all + w[j];
    if (std::fabs(divisor_all) < 1e-8f) divisor_all = 1;
    mask_stream masks[MERGE_MAX_ARGS];
    if (drop)
        for (uint32_t j = 0; j < models; j++) masks[j] = mask_stream(a.ints[1], a.ints[2], j, a.ints[3]);
    // Loops over one model at a time on short runs (vectorisable, no data-dependent branches);
    // each element still sees exactly the operations, in the order, of the comment above.
    constexpr size_t run = 256;
    float wd[MERGE_MAX_ARGS][run], s[run], divisor[run];
    for (size_t i0 = 0; i0 < n_total; i0 += run) {
        const size_t n = n_total - i0 < run ? n_total - i0 : run;
        const float * base = a.x[0] + i0;
        float * out = r + i0;
        for (uint32_t j = 0; j < models; j++) {
            const float * m = a.x[j + 1] + i0;
            float * d = wd[j];
            for (size_t i = 0; i < n; i++) d[i] = m[i] - base[i];
            if (trim)
                for (size_t i = 0; i < n; i++) d[i] = keep_or_zero(magnitude_key(d[i]) >= trim_key[j], d[i]);
            if (drop) {
                for (size_t i = 0; i < n; i++) d[i] = keep_or_zero(masks[j].word(a.index + i0 + i) >= threshold[j], d[i]);
                if (rescale)
                    for (size_t i = 0; i < n; i++) d[i] = d[i] / keep[j];
            }
            for (size_t i = 0; i < n; i++) d[i] = d[i] * w[j];
        }
        if (consensus) {
            for (size_t i = 0; i < n; i++) s[i] = by_count ? sign_of(wd[0][i]) : wd[0][i];
            for (uint32_t j = 1; j < models; j++)
                for (size_t i = 0; i < n; i++) s[i] = s[i] + (by_count ? sign_of(wd[j][i]) : wd[j][i]);
            for (size_t i = 0; i < n; i++) s[i] = s[i] >= 0.0f ? 1.0f : -1.0f; // the elected sign
            for (uint32_t j = 0; j < models; j++) {
                for (size_t i = 0; i < n; i++) {
                    const float c = sign_of(wd[j][i]) == s[i] ? 1.0f : 0.0f;
                    out[i] = j == 0 ? wd[0][i] * c : out[i] + wd[j][i] * c;
                    divisor[i] = j == 0 ? w[0] * c : divisor[i] + w[j] * c;
                }
            }
            for (size_t i = 0; i < n; i++) divisor[i] = divisor[i] == 0.0f ? 1.0f : divisor[i];
        } else {
            for (size_t i = 0; i < n; i++) out[i] = wd[0][i];
            for (uint32_t j = 1; j < models; j++)
                for (size_t i = 0; i < n; i++) out[i] = out[i] + wd[j][i];
            for (size_t i = 0; i < n; i++) divisor[i] = divisor_all;
        }
        if (normalize)
            for (size_t i = 0; i < n; i++) out[i] = out[i] / divisor[i];
        for (size_t i = 0; i < n; i++) out[i] = canonical(base[i] + out[i] * lambda);
    }
}

/** r = a·ca + b·cb with fp32 coefficients (two products, one add: the weighted-sum order). */
void combine(float * r, const float * x, const float * y, float ca, float cb, size_t n) {
    for (size_t i = 0; i < n; i++) r[i] = canonical(x[i] * ca + y[i] * cb);
}

/**
 * Per tensor, from a·b, a·a, b·b (double). Variant 0 (mergekit slerp.py): norms ≤ 1e-8 count as
 * 1; dot = a·b/(|a||b|); |dot| > 0.9995 → (1−t)·a + t·b; else θ = acos dot, and the
 * unnormalised tensors get the coefficients:
 * r = a·sin((1−t)θ)/sin θ + b·sin(tθ)/sin θ. Variant 1 (sd-mecha slerp): dot clamped to [−1, 1],
 * ω = acos dot, r = (â·sin((1−t)ω) + b̂·sin(tω))/sin ω · ((1−t)|a| + t|b|); where that is not
 * finite (sin ω = 0, a zero norm) the weighted sum (1−t)·a + t·b, as sd-mecha falls back.
 */
void slerp(float * r, const merge_many_args & a, size_t n) {
    const double t = a.params[0];
    const double ab = a.stats[0], na = std::sqrt(a.stats[1]), nb = std::sqrt(a.stats[2]);
    double ca = 1 - t, cb = t;
    if (a.ints[0] == 0) {
        const double da = na > 1e-8 ? na : 1, db = nb > 1e-8 ? nb : 1;
        const double dot = ab / (da * db);
        if (!(std::fabs(dot) > 0.9995)) {
            const double theta = det_acos(dot < -1 ? -1 : (dot > 1 ? 1 : dot)), s = det_sin(theta);
            const double tt = theta * t;
            ca = det_sin(theta - tt) / s;
            cb = det_sin(tt) / s;
            if (!std::isfinite(ca) || !std::isfinite(cb)) ca = 1 - t, cb = t;
        }
    } else {
        double dot = ab / (na * nb);
        dot = dot < -1 ? -1 : (dot > 1 ? 1 : dot);
        const double omega = det_acos(dot), s = det_sin(omega);
        const double scale = (1 - t) * na + t * nb;
        const double xa = det_sin((1 - t) * omega) / s * scale / na, xb = det_sin(t * omega) / s * scale / nb;
        if (std::isfinite(xa) && std::isfinite(xb)) ca = xa, cb = xb;
    }
    combine(r, a.x[0], a.x[1], (float) ca, (float) cb, n);
}

/**
 * mergekit model_stock.py (filter_wise false): δi = Mi − base; cos_ij = clamp(δi·δj /
 * max(|δi||δj|, 1e-6), −1, 1); c = mean over i < j; t = N·c / (1 + (N−1)·c) (double, then fp32);
 * avg = (M1 + … + MN) / N; r = t·avg + (1 − t)·base.
 */
void model_stock(float * r, const merge_many_args & a, size_t n) {
    const uint32_t models = a.n_args - 1;
    double cos_sum = 0;
    uint32_t pairs = 0;
    size_t s = models;
    for (uint32_t i = 0; i < models; i++)
        for (uint32_t j = i + 1; j < models; j++) {
            const double norm = std::sqrt(a.stats[i]) * std::sqrt(a.stats[j]);
            double c = a.stats[s++] / (norm > 1e-6 ? norm : 1e-6);
            c = c < -1 ? -1 : (c > 1 ? 1 : c);
            cos_sum += c;
            pairs++;
        }
    const double c = cos_sum / pairs;
    float t = (float) (models * c / (1 + (models - 1) * c));
    // A NaN coefficient (a NaN or infinite statistic) is the positive quiet NaN in both engines:
    // the TS engine's doubles pass through JS arrays, which do not keep a NaN's sign.
    if (t != t) t = std::numeric_limits<float>::quiet_NaN();
    const float u = 1.0f - t, count = (float) models;
    for (size_t i = 0; i < n; i++) {
        float sum = a.x[1][i];
        for (uint32_t j = 1; j < models; j++) sum = sum + a.x[j + 1][i];
        r[i] = canonical(t * (sum / count) + u * a.x[0][i]);
    }
}

/**
 * sd-mecha add_cosine_a / add_cosine_b (merge_methods): a similarity per column of dim 0 (torch's
 * cosine_similarity(·, ·, dim=0): x·y / sqrt(max(‖x‖²‖y‖², 1e-16)), element e in column e mod C),
 * k = 1 − clamp(similarity − α, 0, 1), r = (1 − k)·a + k·b. Variant 0 (add_cosine_a) takes the
 * similarity of the columns normalised first (each divided by max(‖column‖, 1e-12)); variant 1
 * (add_cosine_b) averages the columns' cosine with the whole tensors' a·b / (‖a‖‖b‖).
 * Similarities and k are computed in double from the statistics, k rounded once to fp32.
 */
void add_cosine(float * r, const merge_many_args & a, size_t n) {
    const double alpha = a.params[0];
    const uint32_t variant = a.ints[0];
    const uint64_t columns = a.ints[1];
    const double * dot = a.columns[0], * aa = a.columns[1], * bb = a.columns[2];
    const double whole = variant == 1 ? a.stats[3] / (std::sqrt(a.stats[4]) * std::sqrt(a.stats[5])) : 0;
    uint64_t c = a.index % columns;
    for (size_t i = 0; i < n; i++) {
        double sim;
        if (variant == 0) {
            const double ma = std::max(std::sqrt(aa[c]), 1e-12), mb = std::max(std::sqrt(bb[c]), 1e-12);
            const double w12 = dot[c] / (ma * mb), w1 = aa[c] / (ma * ma), w2 = bb[c] / (mb * mb);
            sim = w12 / std::sqrt(std::max(w1 * w2, 1e-16));
        } else {
            sim = (dot[c] / std::sqrt(std::max(aa[c] * bb[c], 1e-16)) + whole) / 2;
        }
        const double d = sim - alpha;
        const float k = (float) (1 - (d < 0 ? 0 : (d > 1 ? 1 : d)));
        r[i] = canonical((1.0f - k) * a.x[0][i] + k * a.x[1][i]);
        if (++c == columns) c = 0;
    }
}

} // namespace

merge_many_fn merge_many_kernel(uint32_t kernel) {
    switch (kernel) {
        case MERGE_KERNEL_TASK_MERGE: return task_merge;
        case MERGE_KERNEL_SLERP: return slerp;
        case MERGE_KERNEL_MODEL_STOCK: return model_stock;
        case MERGE_KERNEL_ADD_COSINE: return add_cosine;
        default: return nullptr;
    }
}

bool merge_many_check(uint32_t kernel, size_t n_args, size_t n_params, size_t n_stats, const uint32_t * ints, size_t n_ints, std::string * why) {
    auto fail = [&](const std::string & m) {
        *why = std::string(merge_kernel_name(kernel)) + ": " + m;
        return false;
    };
    const std::string got = " (operands " + std::to_string(n_args) + ", params " + std::to_string(n_params) + ", stats " + std::to_string(n_stats) +
            ", ints " + std::to_string(n_ints) + ")";
    switch (kernel) {
        case MERGE_KERNEL_TASK_MERGE: {
            if (n_args < 2 || n_args > MERGE_MAX_ARGS) return fail("takes a base and 1 to " + std::to_string(MERGE_MAX_ARGS - 1) + " models" + got);
            const size_t models = n_args - 1;
            if (n_params != 2 * models + 1) return fail("takes one weight per model, lambda, one keep rate per model" + got);
            if (n_ints != 4 + models) return fail("takes ints flags, seed lo, seed hi, name hash, one drop threshold per model" + got);
            if (n_stats != ((ints[0] & TASK_MERGE_TRIM) ? models : 0)) return fail("takes one kth-magnitude stat per model with TRIM, none without" + got);
            if (ints[0] > 63) return fail("unknown flags " + std::to_string(ints[0]));
            return true;
        }
        case MERGE_KERNEL_SLERP:
            if (n_args != 2 || n_params != 1 || n_stats != 3 || n_ints != 1) return fail("takes operands a, b, param t, stats [a·b, a·a, b·b], ints [variant]" + got);
            return true;
        case MERGE_KERNEL_MODEL_STOCK: {
            if (n_args < 3 || n_args > MERGE_MAX_ARGS) return fail("takes a base and 2 to " + std::to_string(MERGE_MAX_ARGS - 1) + " models" + got);
            const size_t models = n_args - 1;
            if (n_params != 0 || n_ints != 0 || n_stats != models + models * (models - 1) / 2)
                return fail("takes stats [|δi|² for each model, then δi·δj for i < j]" + got);
            return true;
        }
        case MERGE_KERNEL_ADD_COSINE:
            if (n_args != 2 || n_params != 1 || n_ints != 2 || ints[1] == 0 || ints[0] > 1 || n_stats != (ints[0] == 1 ? 6u : 3u))
                return fail("takes operands a, b, param α, ints [variant, columns], stats [per-column a·b, a·a, b·b] (+ [a·b, a·a, b·b] for variant 1)" + got);
            return true;
        default: return fail("not a many-model kernel");
    }
}
