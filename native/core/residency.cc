#include "residency.h"

#include <algorithm>

double merge_run_residency(const merge_input_map & in, uint64_t offset, uint64_t length, bool sampled) {
    constexpr uint64_t page = 4096, stride = 1u << 20;
    if (length == 0) return 1.0;
    if (!sampled || length <= MERGE_RESIDENCY_EXACT_BYTES) return in.resident_fraction(offset, length);
    const uint64_t n = std::min<uint64_t>(4096, std::max<uint64_t>(16, length / stride));
    // Sample k is the page holding byte offset + k·(length − 1)/(n − 1): the first and last pages included.
    uint64_t cached = 0;
    for (uint64_t k = 0; k < n; k++) {
        const uint64_t at = offset + (uint64_t) ((unsigned __int128) (length - 1) * k / (n - 1));
        cached += in.resident_fraction(at & ~(page - 1), 1) >= 1.0 ? 1 : 0;
    }
    return (double) cached / (double) n;
}
