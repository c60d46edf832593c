#include "pair_table.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "dtype.h"

namespace {

bool is_f8(uint32_t dtype) { return dtype == ST_DTYPE_F8_E4M3 || dtype == ST_DTYPE_F8_E5M2; }

/** Everything a table's entries depend on: kernel, parameters' bits, operand, rounding and output dtypes. */
std::vector<uint32_t> table_key(const merge_op & op, uint32_t out_dtype) {
    std::vector<uint32_t> key{op.kernel, op.args[0].dtype, op.args[1].dtype, op.round, out_dtype};
    for (uint32_t j = 0; j < merge_kernel_n_params(op.kernel); j++) {
        uint32_t bits;
        std::memcpy(&bits, &op.params[j], 4);
        key.push_back(bits);
    }
    return key;
}

} // namespace

bool merge_pair_table_applies(const merge_piece & piece, const merge_write & write) {
    if (write.source.kind != MERGE_OPERAND_OP) return false;
    const merge_op & op = piece.ops[write.source.index];
    if (op.kernel != MERGE_KERNEL_WEIGHTED_SUM && op.kernel != MERGE_KERNEL_LERP) return false;
    if (op.args.size() != 2) return false;
    for (const merge_operand & a : op.args)
        if (a.kind != MERGE_OPERAND_INPUT || !is_f8(a.dtype)) return false;
    return is_f8(write.dtype) || write.dtype == ST_DTYPE_F16 || write.dtype == ST_DTYPE_BF16 || write.dtype == ST_DTYPE_F32;
}

void merge_pair_table_fill(const merge_kernels * k, const merge_op & op, uint32_t out_dtype, uint8_t * table) {
    constexpr size_t N = 65536;
    std::vector<uint8_t> codes(2 * N);
    std::vector<float> values(3 * N);
    uint8_t * ca = codes.data(), * cb = ca + N;
    for (size_t c = 0; c < N; c++) {
        ca[c] = (uint8_t) (c >> 8);
        cb[c] = (uint8_t) c;
    }
    float * a = values.data(), * b = a + N, * r = b + N;
    // What exec.cc's run_op and exec_write_range do to every element: widen both operands, run the
    // kernel, round unless the store rounds the same way (the write's dtype is the op's), store.
    merge_kernels_load(k, op.args[0].dtype)(a, ca, N);
    merge_kernels_load(k, op.args[1].dtype)(b, cb, N);
    if (op.kernel == MERGE_KERNEL_WEIGHTED_SUM) k->weighted_sum(r, a, b, op.params[0], op.params[1], N);
    else k->lerp(r, a, b, op.params[0], N);
    if (op.round != out_dtype)
        if (const merge_round_fn round = merge_kernels_round(k, op.round)) round(r, N);
    merge_kernels_store(k, out_dtype)(table, r, N);
    std::memset(table + N * st_dtype_size(out_dtype), 0, PAIR_TABLE_PAD);
}

void merge_pair_tables_build(const merge_job & job, const merge_kernels * k, uint64_t min_elements, merge_pair_tables * out) {
    struct group {
        uint64_t elements = 0;
        std::vector<std::pair<size_t, size_t>> writes;
    };
    std::map<std::vector<uint32_t>, group> groups;
    out->tables.clear();
    out->of_write.assign(job.pieces.size(), {});
    for (size_t p = 0; p < job.pieces.size(); p++) {
        const merge_piece & piece = job.pieces[p];
        out->of_write[p].assign(piece.writes.size(), nullptr);
        for (size_t w = 0; w < piece.writes.size(); w++) {
            if (!merge_pair_table_applies(piece, piece.writes[w])) continue;
            group & g = groups[table_key(piece.ops[piece.writes[w].source.index], piece.writes[w].dtype)];
            g.elements += piece.n;
            g.writes.push_back({p, w});
        }
    }
    // The largest groups first, while the tables fit PAIR_TABLE_MAX_BYTES.
    std::vector<const group *> order;
    for (const auto & entry : groups)
        if (entry.second.elements >= min_elements && entry.second.elements > 0) order.push_back(&entry.second);
    std::stable_sort(order.begin(), order.end(), [](const group * x, const group * y) { return x->elements > y->elements; });
    uint64_t bytes = 0;
    for (const group * gp : order) {
        const group & g = *gp;
        const merge_piece & first = job.pieces[g.writes[0].first];
        const merge_write & write = first.writes[g.writes[0].second];
        const uint64_t size = 65536 * st_dtype_size(write.dtype) + PAIR_TABLE_PAD;
        if (bytes + size > PAIR_TABLE_MAX_BYTES) continue;
        bytes += size;
        std::unique_ptr<uint8_t[]> table(new uint8_t[size]);
        merge_pair_table_fill(k, first.ops[write.source.index], write.dtype, table.get());
        for (const auto & pw : g.writes) out->of_write[pw.first][pw.second] = table.get();
        out->tables.push_back(std::move(table));
    }
}
