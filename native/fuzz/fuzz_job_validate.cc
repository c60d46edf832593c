// libFuzzer target: merge_job_validate and merge_plan_build on jobs decoded from the bytes.
// Validation must never crash or read out of bounds (ASan/UBSan), must refuse with one of its
// documented codes and a message, and anything it accepts must satisfy job_invariants.h, as
// must the plan the engine then builds from it. No files are touched: paths are only names.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/errors.h"
#include "core/job.h"
#include "core/plan.h"
#include "job_builder.h"
#include "job_invariants.h"
#include "outcomes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    FuzzedDataProvider d(data, size);
    fuzz_shape shape;
    shape.scale = 1u << 16;
    merge_job job = fuzz_job_builder(d, shape).build({"in0", "in1", "in2", "in3"}, {"out0", "out1", "out2"});
    const merge_status s = merge_job_validate(job);
    fuzz_count_outcome(s.code);
    if (!s.ok()) {
        const merge_error c = s.code;
        FUZZ_CHECK(c == merge_error::INVALID_ARGUMENT || c == merge_error::INVALID_OFFSET || c == merge_error::DTYPE_UNSUPPORTED ||
                       c == merge_error::JOB_TOO_LARGE || c == merge_error::SHAPE_INVALID || c == merge_error::SHAPE_MISMATCH || c == merge_error::SIZE_OVERFLOW, // LoRA operand shapes
                   "unexpected code %s", merge_error_name(c));
        FUZZ_CHECK(!s.message.empty(), "%s without a message", merge_error_name(c));
        return 0;
    }
    fuzz_check_accepted(job);
    merge_plan plan;
    merge_plan_build(job, &plan);
    fuzz_check_plan(job, plan);
    return 0;
}
