#include "many_kernels.h"

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
void task_merge(float * r, const merge_many_args & a, size_t n) {
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
        for (uint32_t j = 0; j < models; j++) trim_key[j] = (uint32_t) a.stats[j];
    float divisor_all = 0;
    for (uint32_t j = 0; j < models; j++) divisor_all = j == 0 ? w[0] : divisor_all + w[j];
    if (std::fabs(divisor_all) < 1e-8f) divisor_all = 1;
    mask_stream masks[MERGE_MAX_ARGS];
    if (drop)
        for (uint32_t j = 0; j < models; j++) masks[j] = mask_stream(a.ints[1], a.ints[2], j, a.ints[3]);
    float wd[MERGE_MAX_ARGS];
    for (size_t i = 0; i < n; i++) {
        const float base = a.x[0][i];
        for (uint32_t j = 0; j < models; j++) {
            float d = a.x[j + 1][i] - base;
            if (trim) d = d * (magnitude_key(d) >= trim_key[j] ? 1.0f : 0.0f);
            if (drop) {
                d = d * (masks[j].word(a.index + i) >= threshold[j] ? 1.0f : 0.0f);
                if (rescale) d = d / keep[j];
            }
            wd[j] = d * w[j];
        }
        float mixed, divisor;
        if (consensus) {
            float s = by_count ? sign_of(wd[0]) : wd[0];
            for (uint32_t j = 1; j < models; j++) s = s + (by_count ? sign_of(wd[j]) : wd[j]);
            const float elected = s >= 0.0f ? 1.0f : -1.0f;
            mixed = 0;
            divisor = 0;
            for (uint32_t j = 0; j < models; j++) {
                const float c = sign_of(wd[j]) == elected ? 1.0f : 0.0f;
                mixed = j == 0 ? wd[0] * c : mixed + wd[j] * c;
                divisor = j == 0 ? w[0] * c : divisor + w[j] * c;
            }
            if (divisor == 0.0f) divisor = 1;
        } else {
            mixed = wd[0];
            for (uint32_t j = 1; j < models; j++) mixed = mixed + wd[j];
            divisor = divisor_all;
        }
        if (normalize) mixed = mixed / divisor;
        r[i] = canonical(base + mixed * lambda);
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

} // namespace

merge_many_fn merge_many_kernel(uint32_t kernel) {
    switch (kernel) {
        case MERGE_KERNEL_TASK_MERGE: return task_merge;
        case MERGE_KERNEL_SLERP: return slerp;
        case MERGE_KERNEL_MODEL_STOCK: return model_stock;
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
        default: return fail("not a many-model kernel");
    }
}
