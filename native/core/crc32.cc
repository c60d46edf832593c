#include "crc32.h"

#include <cstring>

namespace {

struct crc_tables {
    uint32_t t[8][256];
    crc_tables() {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
            for (int s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
};

// Multiplication modulo the CRC polynomial, reflected (zlib's multmodp).
uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) break;
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ 0xedb88320u : b >> 1;
    }
    return p;
}

struct x2n_table {
    uint32_t t[32]; // x^(2^k) mod p(x)
    x2n_table() {
        uint32_t p = 1u << 30; // x^1
        t[0] = p;
        for (int k = 1; k < 32; k++) t[k] = p = multmodp(p, p);
    }
};

// x^(n * 2^k) mod p(x)
uint32_t x2nmodp(uint64_t n, unsigned k) {
    static const x2n_table table;
    uint32_t p = 1u << 31; // x^0
    while (n) {
        if (n & 1) p = multmodp(table.t[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

const crc_tables & tables() {
    static const crc_tables tabs;
    return tabs;
}

} // namespace

uint32_t merge_crc32_update(uint32_t crc, const void * data, size_t n) {
    const uint32_t (*t)[256] = tables().t;
    const unsigned char * p = (const unsigned char *) data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo, hi;
        std::memcpy(&lo, p, 4); // little-endian hosts only (x86-64, arm64)
        std::memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
            t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

uint32_t merge_crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t length_b) {
    return multmodp(x2nmodp(length_b, 3), crc_a) ^ crc_b;
}
