// Transcendental functions in double built only from + − × ÷ and sqrt (each correctly rounded
// by IEEE 754), so C++ and lib/engine/det-math.ts give the same bits: libm's sin/acos differ
// between C libraries, and V8's Math.sin is its own code. Accuracy: within a few ulps of the
// exact value over the ranges used (test/methods/many/det-math.test.ts compares with Math.*).
// Compiled without FMA contraction (-ffp-contract=off), as the whole core.
#pragma once

/** sin x for finite x (argument reduction by π/2 in two parts: accurate for |x| < 1e5). */
double det_sin(double x);
/** cos x, as det_sin. */
double det_cos(double x);
/** acos x for x in [−1, 1] (NaN outside). */
double det_acos(double x);
