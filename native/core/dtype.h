// Tensor element types. The numeric ids are the indices of DTYPES in lib/dtypes.ts and are part
// of the job contract: never reorder.
#pragma once

#include <cstddef>
#include <cstdint>

enum st_dtype : uint32_t {
    ST_DTYPE_BOOL = 0,
    ST_DTYPE_U8 = 1,
    ST_DTYPE_I8 = 2,
    ST_DTYPE_F8_E5M2 = 3,
    ST_DTYPE_F8_E4M3 = 4,
    ST_DTYPE_I16 = 5,
    ST_DTYPE_U16 = 6,
    ST_DTYPE_F16 = 7,
    ST_DTYPE_BF16 = 8,
    ST_DTYPE_I32 = 9,
    ST_DTYPE_U32 = 10,
    ST_DTYPE_F32 = 11,
    ST_DTYPE_F64 = 12,
    ST_DTYPE_I64 = 13,
    ST_DTYPE_U64 = 14,
    ST_DTYPE_COUNT = 15,
};

inline bool st_dtype_valid(uint32_t id) { return id < ST_DTYPE_COUNT; }

/** Byte size of one element; 0 for an invalid id. */
inline size_t st_dtype_size(uint32_t id) {
    static const uint8_t sizes[ST_DTYPE_COUNT] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    return id < ST_DTYPE_COUNT ? sizes[id] : 0;
}

/** The safetensors spelling ("F16", "BF16", ...), or "?" for an invalid id. */
inline const char * st_dtype_name(uint32_t id) {
    static const char * names[ST_DTYPE_COUNT] = {
        "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
        "I32", "U32", "F32", "F64", "I64", "U64",
    };
    return id < ST_DTYPE_COUNT ? names[id] : "?";
}

/** Types the engines compute with (widened to fp32): F16, BF16, F32, F64, F8_E4M3, F8_E5M2. */
inline bool st_dtype_is_math(uint32_t id) {
    return id == ST_DTYPE_F16 || id == ST_DTYPE_BF16 || id == ST_DTYPE_F32 || id == ST_DTYPE_F64 ||
           id == ST_DTYPE_F8_E4M3 || id == ST_DTYPE_F8_E5M2;
}
