// Plain structs mirroring lib/native/job.ts, and the validation the engine runs before any
// pointer arithmetic. Nothing here trusts the TypeScript planner: every byte range is
// re-checked with overflow-checked arithmetic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "errors.h"
#include "lowrank.h"

enum merge_operand_kind : uint32_t {
    MERGE_OPERAND_INPUT = 0,
    MERGE_OPERAND_OP = 1,
    MERGE_OPERAND_LOWRANK = 2,   // an op argument only: index into merge_piece::lowranks
    MERGE_OPERAND_KRONECKER = 3, // an op argument only: index into merge_piece::kroneckers
};

/** `{kind:"input", file, offset, dtype}`, `{kind:"op", index}` or `{kind:"lowrank", …}` (index). */
struct merge_operand {
    merge_operand_kind kind = MERGE_OPERAND_INPUT;
    uint32_t file = 0;   // input: index into merge_job::inputs
    uint64_t offset = 0; // input: absolute byte offset of element 0
    uint32_t dtype = 0;  // input: st_dtype id
    uint32_t index = 0;  // op: index of an earlier op of the same piece; lowrank: of piece.lowranks
};

struct merge_op {
    uint32_t kernel = 0; // merge_kernel id
    std::vector<merge_operand> args;
    std::vector<float> params; // at most MERGE_MAX_PARAMS, already fp32
    uint32_t round = 11;       // st_dtype id: F16/BF16 round the result, F32 (or F64) do not
    std::vector<uint32_t> stats; // indices into merge_piece::reductions, read as doubles
    std::vector<uint32_t> ints;  // integer parameters
    uint64_t element_start = 0;  // element index (in the keyed tensor) of the piece's element 0
};

/** A statistic over the whole piece (lib/native/job.ts JobReduction; reductions.h). */
struct merge_reduction {
    uint32_t kind = 0; // merge_reduction_kind
    std::vector<merge_operand> args;
    uint64_t k = 0;    // kth-magnitude
    uint64_t columns = 0; // sum-squares / dot per column: element i adds to column i mod columns (0: one sum)
};

struct merge_write {
    uint32_t output = 0;
    uint64_t offset = 0; // absolute byte offset in the output file
    uint32_t dtype = 0;
    merge_operand source;
};

struct merge_piece {
    std::string name; // tensor name, for errors
    uint64_t n = 0;   // element count
    std::vector<merge_op> ops;
    std::vector<merge_write> writes;
    std::vector<merge_lowrank> lowranks;     // the low-rank operands of the ops (lowrank.h)
    std::vector<merge_kronecker> kroneckers; // the Kronecker (LoKr) operands of the ops
    std::vector<merge_reduction> reductions; // computed before any element is written
};

struct merge_literal {
    uint64_t offset = 0;
    std::vector<uint8_t> data; // a copy: the JS buffer may change while the job runs
};

struct merge_range {
    uint64_t offset = 0;
    uint64_t length = 0;
};

struct merge_input {
    std::string path;
    uint64_t size = 0; // the engine re-checks fstat() against it
};

struct merge_output {
    std::string path; // created with O_EXCL
    uint64_t size = 0;
    std::vector<merge_literal> literals;
    std::vector<merge_range> crc32_ranges;
};

enum merge_isa : uint32_t {
    MERGE_ISA_AUTO = 0,
    MERGE_ISA_SCALAR = 1,
    MERGE_ISA_AVX2 = 2,
    MERGE_ISA_AVX512 = 3,
};

/**
 * What happens to the page cache when a job reads uncached input bytes (engine.cc start_reader).
 * KEEP reads them through the maps, so they stay cached for the next merge of the same models,
 * except when the inputs are more than half the RAM (they could not stay cached: those are read
 * directly and dropped behind either way). BYPASS reads every uncached run with O_DIRECT into the
 * engine's own buffers: no page-cache page is made, so nothing is left cached either. AUTO is
 * BYPASS under a hypervisor (CPUID's hypervisor bit) and KEEP on bare metal: on a VM whose free
 * memory goes back to the host, each fresh page-cache page is a host fault (2 x SD 1.5 cold,
 * maps 12-56 s against direct 6-8 s; bench/RESULTS.md "Input cache"), and its idle page cache
 * is reclaimed within minutes anyway; on bare metal a fresh page is cheap and the next merge warm.
 */
enum merge_input_cache {
    MERGE_INPUT_CACHE_AUTO = 0,
    MERGE_INPUT_CACHE_KEEP = 1,
    MERGE_INPUT_CACHE_BYPASS = 2,
};

/**
 * The shared control block (a JS Float64Array): [0] cancel flag, [1] output bytes done.
 * The memory belongs to JS (the binding keeps it alive); C++ threads only touch it through
 * relaxed atomic loads/stores. `cells` may be null (no cancel, no progress).
 */
struct merge_control {
    double * cells = nullptr;
    size_t n_cells = 0;

    bool cancelled() const {
        if (!cells || n_cells < 1) return false;
        double v;
        __atomic_load(&cells[0], &v, __ATOMIC_RELAXED);
        return v != 0.0;
    }
    void set_done(double bytes) const {
        if (cells && n_cells >= 2) __atomic_store(&cells[1], &bytes, __ATOMIC_RELAXED);
    }
};

/** Engine tuning, not part of the contract (benchmarks set it from env in the binding). */
struct merge_tuning {
    uint64_t window_bytes = 32ull << 20; // output bytes per window, rounded to 4096
    int direct_io = -1;                  // 0 buffered; otherwise try O_DIRECT for aligned blocks
    int prefetch = 1;                    // MADV_WILLNEED the next window's inputs
    int release_inputs = 1;              // MADV_DONTNEED input pages once consumed (bounded RSS)
    int interleave = 1;                  // several outputs move through the inputs in step (engine_stream.cc next_output)
    int fsync = 1;                       // fsync outputs before returning
    int window_pause_ms = 0;             // tests only: sleep after each window (act on the inputs mid-job)
    int buffered_reads = 1;              // read() uncached input runs into memory: 0 never, 1 when inputs are uncached, 2 always (engine_reads.cc start_reader)
    uint64_t read_buffer_bytes = 32ull << 20; // each of the two read slots (prefetch.h merge_input_reader)
    int readers = 0;                     // threads reading the input runs (requests in flight); 0: 4 with direct reads, else 2 (engine_reads.cc start_reader)
    uint64_t read_piece_bytes = 4ull << 20; // one pread of the reader (prefetch.h)
    int direct_reads = 1;                // O_DIRECT for the reader's runs: 0 never, 1 cold runs (default), 2 every run it reads, 3 tests: as 2, refused (prefetch.h)
    int output_buffers = 2;              // output windows in flight (being computed or written), 2 to 64
    int sampled_residency = 1;           // drop-behind / read-ahead: sample long runs' pages, skip cached runs' read-ahead (residency.h)
    uint64_t ramp_bytes = 2ull << 20;    // the job's first and last windows start at this size and double up to window_bytes (engine_stream.cc window_end); 0: every window full size
};

struct merge_job {
    std::vector<merge_input> inputs;
    std::vector<merge_output> outputs;
    std::vector<merge_piece> pieces;
    uint32_t threads = 1;
    merge_isa isa = MERGE_ISA_AUTO;
    merge_input_cache input_cache = MERGE_INPUT_CACHE_AUTO;
    merge_control control;
    merge_tuning tuning;
};

/** NaN and infinity counts of one output (see exec_write_range for which values count). */
struct merge_nonfinite {
    uint64_t nan = 0, inf = 0;
};

struct merge_result {
    uint64_t bytes_written = 0;
    std::string isa;
    uint32_t threads = 0;
    std::vector<std::vector<uint32_t>> crc32; // per output, per requested range
    std::vector<merge_nonfinite> nonfinite;   // per output: NaNs and infinities the merge computed
    std::vector<std::pair<std::string, double>> stats;
};

/**
 * Checks everything that can be checked without opening files: ids, arities, operand
 * references, and that every input/output byte range lies inside the declared sizes (no
 * overflow), and that the byte ranges written in one output (writes and literals) do not
 * overlap. The engine re-checks file sizes with fstat before mapping.
 */
merge_status merge_job_validate(const merge_job & job);
