#include "errors.h"

#include <cerrno>
#include <cstring>

const char * merge_error_name(merge_error code) {
    static const char * names[] = {
        "FILE_TOO_SMALL", "HEADER_TOO_LARGE", "HEADER_NOT_UTF8", "HEADER_NOT_JSON", "HEADER_INVALID",
        "METADATA_INVALID", "DTYPE_UNSUPPORTED", "SHAPE_INVALID", "INVALID_OFFSET", "SIZE_MISMATCH",
        "TRAILING_BYTES", "FILE_TRUNCATED", "SIZE_OVERFLOW", "DUPLICATE_TENSOR", "ZIP_INVALID", "PICKLE_INVALID", "PICKLE_GLOBAL_REFUSED",
        "CKPT_UNSUPPORTED", "FILE_NOT_FOUND", "FORMAT_UNKNOWN", "MODEL_NOT_FOUND", "MODEL_AMBIGUOUS",
        "ARCHITECTURE_MISMATCH", "SHAPE_MISMATCH", "METHOD_UNKNOWN", "INVALID_ARGUMENT", "RECIPE_INVALID",
        "OUTPUT_EXISTS", "INPUT_IS_TARGET", "DISK_FULL", "JOB_TOO_LARGE", "IO_ERROR", "INPUT_CHANGED", "ABORTED",
        "NATIVE_UNAVAILABLE", "INTERNAL", "MODEL_FOLDER_INVALID", "LORA_INVALID", "LORA_MISMATCH",
    };
    static_assert(sizeof(names) / sizeof(names[0]) == (size_t) merge_error::COUNT_, "error name table out of sync");
    if (code == merge_error::OK) return "OK";
    const int i = (int) code;
    return i >= 0 && i < merge_error_count ? names[i] : "INTERNAL";
}

merge_status merge_status_from_errno(int err, const std::string & path, const char * doing) {
    std::string msg = path + ": " + std::strerror(err) + " (" + doing + ")";
    switch (err) {
        case ENOENT: return merge_status::fail(merge_error::FILE_NOT_FOUND, msg, path);
        case ENOSPC:
        case EDQUOT: return merge_status::fail(merge_error::DISK_FULL, msg, path);
        case EEXIST: return merge_status::fail(merge_error::OUTPUT_EXISTS, msg, path);
        default: return merge_status::fail(merge_error::IO_ERROR, msg, path);
    }
}
