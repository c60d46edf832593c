// Error codes: the same closed set, in the same order, as ERROR_CODES in lib/errors.ts.
// The core never throws across its API: it returns a merge_status, which the binding turns
// into a JS Error with `code`, `path` and `tensor`.
#pragma once

#include <string>

enum class merge_error {
    OK = -1,
    FILE_TOO_SMALL = 0,
    HEADER_TOO_LARGE,
    HEADER_NOT_UTF8,
    HEADER_NOT_JSON,
    HEADER_INVALID,
    METADATA_INVALID,
    DTYPE_UNSUPPORTED,
    SHAPE_INVALID,
    INVALID_OFFSET,
    SIZE_MISMATCH,
    TRAILING_BYTES,
    FILE_TRUNCATED,
    SIZE_OVERFLOW,
    DUPLICATE_TENSOR,
    ZIP_INVALID,
    PICKLE_INVALID,
    PICKLE_GLOBAL_REFUSED,
    CKPT_UNSUPPORTED,
    FILE_NOT_FOUND,
    FORMAT_UNKNOWN,
    MODEL_NOT_FOUND,
    MODEL_AMBIGUOUS,
    ARCHITECTURE_MISMATCH,
    SHAPE_MISMATCH,
    METHOD_UNKNOWN,
    INVALID_ARGUMENT,
    RECIPE_INVALID,
    OUTPUT_EXISTS,
    INPUT_IS_TARGET,
    DISK_FULL,
    JOB_TOO_LARGE,
    IO_ERROR,
    INPUT_CHANGED,
    ABORTED,
    NATIVE_UNAVAILABLE,
    INTERNAL,
    MODEL_FOLDER_INVALID,
    LORA_INVALID,
    LORA_MISMATCH,
    COUNT_,
};

/** The string code of lib/errors.ts ("INVALID_OFFSET", ...); "OK" for merge_error::OK. */
const char * merge_error_name(merge_error code);

/** Number of codes (excluding OK), for the test that compares the list with lib/errors.ts. */
constexpr int merge_error_count = (int) merge_error::COUNT_;

/** Outcome of a core call: OK, or a code with a message and the file/tensor it is about. */
struct merge_status {
    merge_error code = merge_error::OK;
    std::string message;
    std::string path;   // empty when not about one file
    std::string tensor; // empty when not about one tensor

    bool ok() const { return code == merge_error::OK; }

    static merge_status fail(merge_error code, std::string message, std::string path = {}, std::string tensor = {}) {
        merge_status s;
        s.code = code;
        s.message = std::move(message);
        s.path = std::move(path);
        s.tensor = std::move(tensor);
        return s;
    }
};

/** Maps an errno from open/write/fsync to a code (ENOENT, ENOSPC, EEXIST, else IO_ERROR). */
merge_status merge_status_from_errno(int err, const std::string & path, const char * doing);
