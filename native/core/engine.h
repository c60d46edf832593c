// Runs a merge job: validates it, maps the inputs, creates the outputs and streams them
// window by window through the kernels. Blocking; call it from a worker thread (the binding
// uses a Napi::AsyncWorker). Never throws and never aborts: every failure, including
// std::bad_alloc, comes back as a merge_status, and then no output file is left behind.
//
// Memory: two window buffers (tuning.window_bytes each, 32 MiB by default) plus ~256 KiB of
// scratch per thread; input pages are released (MADV_DONTNEED) once consumed, so private
// memory does not grow with the model size.
#pragma once

#include "job.h"

merge_status merge_engine_run(const merge_job & job, merge_result * result);
