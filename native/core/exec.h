// Evaluation of one write over an element range, block by block in per-thread fp32 scratch.
// A block is small enough that its operand slots stay in L1/L2; the ops of the piece run one
// after another on the block, exactly in job order, so results do not depend on block size,
// chunking or thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "file_io.h"
#include "job.h"
#include "kernels.h"
#include "pair_table.h"
#include "plan.h"
#include "prefetch.h"

struct merge_reduction_result;

/** Scratch slots after the operand slots: a conversion slot and two low-rank slots (exec.cc). */
constexpr size_t EXEC_EXTRA_SLOTS = 3;

/**
 * Elements of a low-rank band (64K floats = 256 KiB per band): at least 5 rows of the widest
 * SD-size factor (a 3×3 conv of 1280 channels has 11520 columns) so that every `down` vector the
 * product widens serves 4 output rows, where a 3072-element block covers one row or less.
 */
constexpr size_t EXEC_LOWRANK_BAND = 65536;
/** Bands kept per thread: low-rank operands one op (a stack of LoRAs) can read without recomputing. */
constexpr size_t EXEC_LOWRANK_BANDS = 4;

/** Read-only state shared by all threads of one run. */
struct exec_context {
    const merge_job * job;
    const merge_plan * plan;
    const merge_kernels * kernels;
    const std::vector<std::unique_ptr<merge_input_map>> * inputs;
    bool release_inputs; // MADV_DONTNEED input pages once a range is consumed
    /** Per piece, its reduction results (reductions.h), filled before the piece is written. */
    const std::vector<std::vector<merge_reduction_result>> * stats;
    /**
     * *staged: the current window's input runs read into memory (prefetch.h), or null. An
     * input range one of its runs holds is read there, anything else through the map.
     */
    const staged_window * const * staged = nullptr;
    /** The job's fp8 pair tables (pair_table.h): a write that has one is a lookup per element. */
    const merge_pair_tables * pair_tables = nullptr;
    /**
     * A write that stores one task-merge op of fp16 or bf16 inputs as fp16 or bf16 runs the ISA's fused kernel
     * (kernels.h merge_task_merge_half_fn) instead of widening into slots; false: the slots' path
     * (TENSORMERGE_TASK_MERGE_FUSED=0). The same bits either way.
     */
    bool fused_task_merge = true;
    /**
     * A write that stores one SLERP op of F32 / F16 inputs as fp16 runs the ISA's fused store
     * (slerp_fused.h) instead of a slot and store_f16; false: the slots' path
     * (TENSORMERGE_SLERP_FUSED=0). The same bits either way.
     */
    bool fused_slerp = true;
    /**
     * The held pieces' input runs (statistics_hold.h), or null: an input range one of them
     * holds is read there (before *staged and the map).
     */
    const staged_window * held = nullptr;
};

/**
 * One thread's scratch: max_ops + MERGE_MAX_ARGS + EXEC_EXTRA_SLOTS slots of `block` floats, 64-byte aligned,
 * and this thread's non-finite counters per output (summed by the engine at the end: no atomics
 * in the compute loop).
 */
class exec_scratch {
public:
    /** Throws std::bad_alloc. */
    exec_scratch(size_t max_ops, size_t block, size_t n_outputs = 0);
    ~exec_scratch();
    exec_scratch(const exec_scratch &) = delete;
    exec_scratch & operator=(const exec_scratch &) = delete;

    size_t block() const { return block_; }
    float * slot(size_t i) const { return data_ + i * block_; }
    size_t n_slots() const { return n_slots_; }
    std::vector<merge_nonfinite> & nonfinite() { return nonfinite_; }
    const std::vector<merge_nonfinite> & nonfinite() const { return nonfinite_; }
    /** Elements this thread wrote through the fused task merge (the engine stat taskMergeFusedElements). */
    uint64_t & fused_elements() { return fused_elements_; }
    /** Elements this thread wrote through the fused SLERP store (the engine stat slerpFusedElements). */
    uint64_t & slerp_fused_elements() { return slerp_fused_elements_; }

    /**
     * Widened-input reuse inside one block evaluation: ops of a piece often read the same input
     * (TIES's task vectors Mi − base all read the base), and the operand slot it was widened
     * into still holds it when the next op asks. A slot's tag names the input bytes it holds;
     * tags are valid until the next begin_block(), which every block evaluation calls first.
     */
    void begin_block() { generation_++; }
    bool holds(size_t slot, const uint8_t * src, uint32_t dtype, size_t m) const {
        const slot_tag & t = tags_[slot];
        return t.generation == generation_ && t.src == src && t.dtype == dtype && t.m == m;
    }
    void tag(size_t slot, const uint8_t * src, uint32_t dtype, size_t m) { tags_[slot] = {generation_, src, dtype, m}; }
    void forget(size_t slot) { tags_[slot].generation = 0; }
    size_t slot_index(const float * s) const { return (size_t) (s - data_) / block_; }

    /**
     * Low-rank bands (exec.cc): a low-rank operand's values computed for up to
     * EXEC_LOWRANK_BAND elements at once, then served to the blocks that follow. A band is
     * identified by its operand (`key`) and element range; an entry read in the current block
     * is never replaced, so the ops of one block can hold EXEC_LOWRANK_BANDS of them at a time.
     */
    const float * band_find(const void * key, uint64_t i, size_t m);
    /** An entry not read in the current block, claimed for key on [i0, i1); nullptr if none. */
    float * band_claim(const void * key, uint64_t i0, uint64_t i1);
    /** EXEC_LOWRANK_BAND floats for a band's second (Hadamard) product. */
    float * band_second() const { return bands_data_ + EXEC_LOWRANK_BANDS * EXEC_LOWRANK_BAND; }

private:
    struct slot_tag {
        uint64_t generation = 0;
        const uint8_t * src = nullptr;
        uint32_t dtype = 0;
        size_t m = 0;
    };
    std::vector<slot_tag> tags_;
    uint64_t generation_ = 1;
    std::vector<merge_nonfinite> nonfinite_; // per output
    uint64_t fused_elements_ = 0;
    uint64_t slerp_fused_elements_ = 0;
    float * data_ = nullptr;
    struct band {
        const void * key = nullptr;
        uint64_t i0 = 0, i1 = 0;
        uint64_t generation = 0; // last block that read it
    };
    band bands_[EXEC_LOWRANK_BANDS];
    float * bands_data_ = nullptr; // EXEC_LOWRANK_BANDS + 1 bands; pages untouched until a job has low-rank operands
    size_t n_slots_, block_;
};

/** Scratch block size for a job whose largest piece has max_ops ops (a multiple of 64). */
size_t exec_block_size(size_t max_ops);

/**
 * Computes elements [i0, i1) of write `w` of piece `p` and stores them at dst, which points at
 * element i0's first byte in the output window. Reads inputs through the maps: call it inside
 * merge_fault_run (fault_guard.h), as the engine does (engine_internal.h run_items), since a
 * truncated input faults here. It allocates nothing, takes no lock and keeps nothing with a
 * destructor on the stack.
 *
 * Non-finite values (the rule of MergeReport.nonFinite, the same in js-engine.ts): the NaNs and
 * infinities stored, in the output dtype's bits, are added to the scratch's counters of its
 * output, for every value a method computed (a write whose source is an op: a NaN the formula
 * passes through from an input counts too, that tensor is the merge's), and for a converted
 * copy of an input tensor only where the input value was finite (an fp32 70000 stored as fp16).
 * Byte-for-byte copies count nothing: a NaN an unmerged tensor already holds is the input's.
 */
void exec_write_range(const exec_context & ctx, exec_scratch & scratch, size_t p, size_t w, uint64_t i0, uint64_t i1, uint8_t * dst);

/**
 * Runs ops `ops` (ascending, each reading only earlier ones) of piece p on elements [i, i + m),
 * m <= scratch.block(), leaving op k's values in scratch.slot(k) (reductions.cc).
 */
void exec_run_ops(const exec_context & ctx, exec_scratch & scratch, size_t p, const std::vector<uint32_t> & ops, uint64_t i, size_t m);

/** Operand a's values on [i, i + m): an op's slot, an aligned F32 input in place, or widened into scratch.slot(slot). */
const float * exec_operand(const exec_context & ctx, exec_scratch & scratch, size_t p, const merge_operand & a, uint64_t i, size_t m, size_t slot);

/** Input operand a's bytes of elements [i, i + m): in the window's read copy when it holds them, else in the map (as every op reads them). */
const uint8_t * exec_input_ptr(const exec_context & ctx, const merge_operand & a, uint64_t i, uint64_t m);

/** Advises (e.g. MADV_DONTNEED) the input bytes of elements [i0, i1) of a write. */
void exec_advise_inputs(const exec_context & ctx, size_t p, size_t w, uint64_t i0, uint64_t i1, int advice);

/** Appends the input byte ranges read by elements [i0, i1) of a write. */
void exec_collect_inputs(const exec_context & ctx, size_t p, size_t w, uint64_t i0, uint64_t i1, std::vector<prefetch_range> * out);
