// Whether an input run is in the page cache, for the engine's drop-behind and read-ahead
// decisions (engine_reads.cc plan_window_reads). mincore over a run that is not mapped yet looks up
// every 4 KiB page in the page cache: on a warm train difference (12.8 GB of inputs) those
// lookups were 13% of the merge's CPU, and the read-ahead of runs already cached (MADV_WILLNEED
// walks the page cache the same way) another 10% (perf, bench/RESULTS.md "Warm element-wise
// rows"). A sample of one page per MiB costs 1/256 of the full check and decides the same
// thresholds (half cached; wholly cached) on runs of a few MiB and more.
#pragma once

#include <cstdint>

#include "file_io.h"

/** Runs of at most this many bytes are checked page by page (exactly) even when sampling. */
constexpr uint64_t MERGE_RESIDENCY_EXACT_BYTES = 2u << 20;

/**
 * The fraction of input bytes [offset, offset + length) whose pages are cached: exact (every
 * page) when !sampled or the run is short, else the fraction of evenly spaced sample pages
 * (one per MiB, at least 16, at most 4096) that are cached. 1.0 for an empty range.
 */
double merge_run_residency(const merge_input_map & in, uint64_t offset, uint64_t length, bool sampled);
