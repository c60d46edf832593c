#include "plan.h"

#include <algorithm>

#include "dtype.h"

void merge_plan_build(const merge_job & job, merge_plan * plan) {
    plan->spans.assign(job.outputs.size(), {});
    plan->writes.assign(job.pieces.size(), {});
    plan->max_ops = 0;
    for (size_t o = 0; o < job.outputs.size(); o++) {
        const merge_output & out = job.outputs[o];
        for (size_t l = 0; l < out.literals.size(); l++)
            if (!out.literals[l].data.empty())
                plan->spans[o].push_back({out.literals[l].offset, out.literals[l].offset + out.literals[l].data.size(), plan_literal, l});
    }
    for (size_t p = 0; p < job.pieces.size(); p++) {
        const merge_piece & piece = job.pieces[p];
        plan->max_ops = std::max(plan->max_ops, piece.ops.size());
        plan->writes[p].resize(piece.writes.size());
        for (size_t w = 0; w < piece.writes.size(); w++) {
            const merge_write & wr = piece.writes[w];
            plan_write & pw = plan->writes[p][w];
            pw.out_size = (uint32_t) st_dtype_size(wr.dtype);
            std::vector<const merge_operand *> reads;
            if (wr.source.kind == MERGE_OPERAND_INPUT) {
                pw.raw = wr.source.dtype == wr.dtype;
                reads.push_back(&wr.source);
            } else {
                // Walk back from the source op to mark the ops it depends on.
                std::vector<bool> needed(piece.ops.size(), false);
                needed[wr.source.index] = true;
                for (size_t k = wr.source.index + 1; k-- > 0;) {
                    if (!needed[k]) continue;
                    for (const merge_operand & a : piece.ops[k].args) {
                        if (a.kind == MERGE_OPERAND_OP) needed[a.index] = true;
                        else if (a.kind == MERGE_OPERAND_INPUT) reads.push_back(&a);
                        // a low-rank operand's factors are small and read by every block of
                        // the piece: not streamed, never released (MADV_DONTNEED) midway
                    }
                }
                for (size_t k = 0; k < needed.size(); k++)
                    if (needed[k]) pw.ops.push_back((uint32_t) k);
            }
            for (const merge_operand * a : reads) {
                const plan_input_ref ref{a->file, a->offset, (uint32_t) st_dtype_size(a->dtype)};
                const bool seen = std::any_of(pw.inputs.begin(), pw.inputs.end(), [&](const plan_input_ref & r) {
                    return r.file == ref.file && r.offset == ref.offset && r.elem_size == ref.elem_size;
                });
                if (!seen) pw.inputs.push_back(ref);
            }
            const uint64_t bytes = piece.n * pw.out_size;
            if (bytes > 0) plan->spans[wr.output].push_back({wr.offset, wr.offset + bytes, p, w});
        }
    }
    for (std::vector<plan_span> & v : plan->spans)
        std::sort(v.begin(), v.end(), [](const plan_span & a, const plan_span & b) { return a.begin < b.begin; });
}
