#include "det_math.h"

#include <cmath>

namespace {

// π/2 as hi + lo: hi has 33 significant bits, so k·hi is exact for |k| < 2^20 (fdlibm's pio2_1).
constexpr double pio2_hi = 1.57079632673412561417e+00;
constexpr double pio2_lo = 6.07710050650619224932e-11;
constexpr double pi_hi = 3.14159265358979311600e+00; // the double nearest π
constexpr double pi_lo = 1.22464679914735317723e-16;

// Taylor coefficients by recurrence, in the same order as det-math.ts (same doubles).
constexpr int sin_terms = 12, asin_terms = 40;
struct tables {
    double sin_c[sin_terms], cos_c[sin_terms], asin_c[asin_terms];
    tables() {
        sin_c[0] = 1;
        cos_c[0] = 1;
        for (int n = 1; n < sin_terms; n++) {
            sin_c[n] = -sin_c[n - 1] / ((2.0 * n) * (2.0 * n + 1));
            cos_c[n] = -cos_c[n - 1] / ((2.0 * n - 1) * (2.0 * n));
        }
        asin_c[0] = 1;
        double a = 1; // (2n)! / (4^n (n!)^2)
        for (int n = 1; n < asin_terms; n++) {
            a = a * (2.0 * n - 1) / (2.0 * n);
            asin_c[n] = a / (2.0 * n + 1);
        }
    }
};
const tables & t() {
    static const tables instance;
    return instance;
}

// |r| <= π/4: Horner from the smallest term.
double sin_poly(double r) {
    const double r2 = r * r;
    double s = t().sin_c[sin_terms - 1];
    for (int n = sin_terms - 2; n >= 0; n--) s = t().sin_c[n] + s * r2;
    return r * s;
}
double cos_poly(double r) {
    const double r2 = r * r;
    double s = t().cos_c[sin_terms - 1];
    for (int n = sin_terms - 2; n >= 0; n--) s = t().cos_c[n] + s * r2;
    return s;
}
// |y| <= 0.5
double asin_small(double y) {
    const double y2 = y * y;
    double s = t().asin_c[asin_terms - 1];
    for (int n = asin_terms - 2; n >= 0; n--) s = t().asin_c[n] + s * y2;
    return y * s;
}

double sin_cos(double x, int shift) {
    if (!std::isfinite(x)) return NAN;
    const double k = std::floor(x / pio2_hi + 0.5);
    const double r = (x - k * pio2_hi) - k * pio2_lo;
    const long q = ((long) std::fmod(k, 4.0) + 4 + shift) % 4;
    switch (q) {
        case 0: return sin_poly(r);
        case 1: return cos_poly(r);
        case 2: return -sin_poly(r);
        default: return -cos_poly(r);
    }
}

} // namespace

double det_sin(double x) { return sin_cos(x, 0); }
double det_cos(double x) { return sin_cos(x, 1); }

double det_acos(double x) {
    if (!(x >= -1 && x <= 1)) return NAN;
    if (x > 0.5) return 2 * asin_small(std::sqrt((1 - x) / 2));
    if (x < -0.5) return (pi_hi - 2 * asin_small(std::sqrt((1 + x) / 2))) + pi_lo;
    return (pio2_hi - asin_small(x)) + pio2_lo;
}
