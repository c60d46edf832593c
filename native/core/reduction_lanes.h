// The lane sums of the per-piece sum reductions (reductions.h): for each reduction r of a step,
// lanes[r][l] += (double) x[r][e] · (double) y[r][e] for the elements e ≡ l (mod
// MERGE_REDUCTION_LANES), each lane's additions in element order. The product of two floats is
// exact in double, so each addition is the one rounding; every ISA adds the same terms to the
// same lane in the same order and gives the same bits.
//
// The reductions of a step (SLERP's a·b, a·a, b·b; model stock's norms and dot products) are
// summed in one loop over the elements: each lane's sum is a chain of dependent additions, and
// several reductions side by side keep the adder busy where one chain waits on its latency.
// Thread-safe (no state); x and y at any alignment.
#pragma once

#include <cstddef>

/** `count` reductions, each over x[r][0, m), y[r][0, m) into lanes[r] (8 doubles); element 0 is in lane 0. */
typedef void (*reduction_lanes_fn)(size_t count, const float * const * x, const float * const * y, double * const * lanes, size_t m);

/** The lane sums compiled for `isa` ("scalar", "avx2", "avx512"; the same bits at every ISA). */
reduction_lanes_fn reduction_lanes_for(const char * isa);
