// Runs a merge job: validates it, maps the inputs, creates the outputs and streams them
// window by window through the kernels. Blocking; call it from a worker thread (the binding
// uses a Napi::AsyncWorker). Never throws and never aborts: every failure, including
// std::bad_alloc, comes back as a merge_status, and then no output file is left behind.
//
// Pipeline, per output in order: the output is cut into windows (32 MiB by default); the
// caller's thread plus `threads - 1` pool threads compute window k in 1 MiB chunks while a
// writer thread pwrite()s window k-1 (O_DIRECT when the filesystem allows it) and a read-ahead
// thread asks the kernel for the inputs of window k+1. CRC-32 ranges are checksummed per
// window, in parallel, once its bytes are final.
//
// Memory: two window buffers plus ~256 KiB of scratch per thread; input pages are unmapped
// (MADV_DONTNEED) once consumed, so neither private memory nor mapped page cache grows with
// the model size (about 70 MiB of RssAnon for the whole process in the 3 x 2 GiB benchmark).
// When the inputs are bigger than half the RAM (and the job has one output), consumed pages
// that were not cached before the merge asked for them are also dropped from the page cache
// at the end of each window (drop-behind), so a cold merge does not grow the cache and warm
// inputs stay warm: see wants_drop_behind() in engine_reads.cc.
//
// Inputs are mapped, not copied. The size is re-checked when the job starts. If another
// process truncates an input during the job, the read faults (SIGBUS); the fault guard
// (fault_guard.h) turns that into FILE_TRUNCATED naming the file, the job stops, its outputs
// are unlinked and the process can run the next job. At the end, each input's size and mtime
// are compared (fstat) with what they were when it was opened: a change is INPUT_CHANGED.
#pragma once

#include "job.h"

merge_status merge_engine_run(const merge_job & job, merge_result * result);

/**
 * The bytes of one output window buffer of a job whose largest output is `max_output_bytes`,
 * before any narrowing for the reader (engine_reads.cc start_reader): what prepareOutputBuffers pools.
 */
uint64_t merge_window_buffer_bytes(const merge_tuning & tuning, uint64_t max_output_bytes);
