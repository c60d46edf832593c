// Counts the outcome (OK or error code) of every run and prints the tally when the fuzzer
// exits, so a run shows that it reached accepted jobs and each refusal, not only that it ran.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "core/errors.h"

inline unsigned long long * fuzz_outcome_counts() {
    static unsigned long long counts[merge_error_count + 1] = {};
    return counts;
}

inline void fuzz_print_outcomes() {
    const unsigned long long * c = fuzz_outcome_counts();
    std::fprintf(stderr, "outcomes:");
    for (int i = 0; i <= merge_error_count; i++)
        if (c[i]) std::fprintf(stderr, " %s=%llu", merge_error_name((merge_error) (i - 1)), c[i]);
    std::fprintf(stderr, "\n");
}

/** Also prints "outcome: CODE" per run when TM_FUZZ_PRINT_OUTCOME is set (corpus selection). */
inline void fuzz_count_outcome(merge_error code) {
    static const bool registered = (std::atexit(fuzz_print_outcomes), true);
    static const bool print_each = std::getenv("TM_FUZZ_PRINT_OUTCOME") != nullptr;
    (void) registered;
    fuzz_outcome_counts()[(int) code + 1]++;
    if (print_each) std::fprintf(stderr, "outcome: %s\n", merge_error_name(code));
}
