// SLERP's output pass stored as fp16 in one pass (the write exec.cc gives it: a SLERP op alone,
// both operands F32 or F16 inputs, the result stored as F16). The slots' path reads a and b,
// writes r = canonical(a·ca + b·cb) into an fp32 scratch slot (many_kernels.cc combine), narrows
// the slot into the output window (store_f16) and reads the window back to count NaNs and
// infinities; here each vector of a and b is combined, canonicalised, narrowed and stored in
// registers, and the NaN / infinity test is taken from the narrowed lanes. The same operations in
// the same order on every lane (two products, one add, no contraction: -ffp-contract=off), so the
// bytes are the slots' (test/methods/many/slerp-fused.test.ts).
//
// Stores: where dst is 2-byte aligned, whole 64-byte lines of the window are written with
// non-temporal stores (no read for ownership of the output lines, and the output does not
// evict from the caches the inputs the statistics pass has just read), then a store fence.
// Thread-safe (no state); a, b and dst at any byte address.
#pragma once

#include <cstddef>
#include <cstdint>

/**
 * dst[i] = fp16(canonical(a[i]·ca + b[i]·cb)) for i < n, a and b F32 (a_f16 / b_f16 false) or F16
 * elements. Returns whether any stored fp16 value has an all-ones exponent (a NaN or an
 * infinity): the caller then counts them on dst (rare).
 */
typedef bool (*slerp_store_f16_fn)(uint8_t * dst, const uint8_t * a, const uint8_t * b, bool a_f16, bool b_f16, float ca, float cb, size_t n);

/** The kernel compiled for `isa` ("avx2", "avx512"); nullptr for "scalar" and non-x86 builds (the slots' path then runs). */
slerp_store_f16_fn slerp_store_f16_for(const char * isa);
