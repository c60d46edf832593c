// CRC-32 with the zip polynomial (0xEDB88320 reflected), as zlib's crc32(): slice-by-8.
// Pure functions over caller-owned bytes; thread-safe (the tables are built on first use
// under a function-local static).
#pragma once

#include <cstddef>
#include <cstdint>

/** Continues `crc` (0 to start) over [data, data + n). Same results as zlib.crc32(data, crc). */
uint32_t merge_crc32_update(uint32_t crc, const void * data, size_t n);

/**
 * The CRC of A followed by B from crc(A), crc(B) and B's length (zlib's crc32_combine), so
 * threads can checksum parts of a range independently.
 */
uint32_t merge_crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b);
