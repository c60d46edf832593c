// libFuzzer target: merge_engine_run end to end on small real files, for the file checks
// around the kernels. The bytes decide the inputs (contents, a declared size that may be wrong,
// missing, a directory), the outputs (fresh, already there, in a missing folder, the same path
// twice, an input's path), the job itself and the engine tuning (window size, O_DIRECT,
// prefetch, page release, interleaving, threads). Oracles, besides ASan/UBSan:
//   - a failure carries the code the first bad file calls for, leaves no output behind and
//     leaves existing files (inputs, a file in the way) untouched;
//   - a success writes each output at its declared size, literals and raw copies byte for byte,
//     zeros where nothing is written, and CRC-32s equal to a bitwise reference.
// Scratch files go to a folder under $TMPDIR; with TM_FUZZ_DISK_DIR set (scripts/fuzz.js sets
// it when $TMPDIR is a tmpfs, which refuses O_DIRECT), outputs of some runs go to a folder
// there, so the O_DIRECT write path is fuzzed too.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/engine.h"
#include "core/errors.h"
#include "core/job.h"
#include "job_builder.h"
#include "job_invariants.h"
#include "outcomes.h"

namespace {

std::string g_dir;      // inputs, and outputs by default
std::string g_disk_dir; // outputs of the runs that pick it (same as g_dir without TM_FUZZ_DISK_DIR)

int remove_entry(const char * path, const struct stat *, int, struct FTW *) { return ::remove(path); }

void remove_dirs() {
    if (!g_dir.empty()) nftw(g_dir.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (g_disk_dir != g_dir) nftw(g_disk_dir.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

std::string make_temp_dir(const char * parent) {
    std::string pattern = std::string(parent && *parent ? parent : "/tmp") + "/tm-fuzz-engine-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    FUZZ_CHECK(mkdtemp(buf.data()) != nullptr, "mkdtemp in %s: %s", parent, std::strerror(errno));
    return buf.data();
}

bool read_file(const std::string & path, std::vector<uint8_t> * out) {
    out->clear();
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    uint8_t buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
    std::fclose(f);
    return true;
}

void write_file(const std::string & path, const std::vector<uint8_t> & bytes) {
    FILE * f = std::fopen(path.c_str(), "wb");
    FUZZ_CHECK(f != nullptr, "cannot create %s: %s", path.c_str(), std::strerror(errno));
    if (!bytes.empty()) FUZZ_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), "short write to %s", path.c_str());
    std::fclose(f);
}

bool exists(const std::string & path) {
    struct stat st;
    return ::lstat(path.c_str(), &st) == 0;
}

/** Bitwise CRC-32 (zlib's polynomial), independent of core/crc32.cc. */
uint32_t crc32_ref(const uint8_t * p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

enum input_kind { INPUT_REGULAR, INPUT_MISSING, INPUT_DIRECTORY };
enum output_kind { OUTPUT_FRESH, OUTPUT_IN_THE_WAY, OUTPUT_NO_FOLDER, OUTPUT_SAME_AS_PREVIOUS, OUTPUT_AN_INPUT };

struct input_setup {
    input_kind kind = INPUT_REGULAR;
    std::vector<uint8_t> bytes;
};

constexpr uint64_t max_output_bytes = 1u << 18; // bigger accepted jobs are skipped: this target is about files, not volume

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    g_dir = make_temp_dir(std::getenv("TMPDIR"));
    const char * disk = std::getenv("TM_FUZZ_DISK_DIR");
    g_disk_dir = disk && *disk ? make_temp_dir(disk) : g_dir;
    std::atexit(remove_dirs);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    FuzzedDataProvider d(data, size);
    const size_t n_files = 4;
    std::vector<std::string> in_paths, out_paths;
    std::vector<input_setup> inputs(n_files);
    for (size_t i = 0; i < n_files; i++) {
        in_paths.push_back(g_dir + "/in" + std::to_string(i));
        const int k = d.ConsumeIntegralInRange<int>(0, 31);
        inputs[i].kind = k == 0 ? INPUT_MISSING : k == 1 ? INPUT_DIRECTORY : INPUT_REGULAR;
        if (inputs[i].kind == INPUT_REGULAR) inputs[i].bytes = d.ConsumeBytes<uint8_t>(d.ConsumeIntegralInRange<size_t>(0, 2048));
    }
    const std::string & out_dir = d.ConsumeBool() ? g_disk_dir : g_dir;
    std::vector<output_kind> out_kinds;
    for (size_t o = 0; o < 3; o++) {
        const int k = d.ConsumeIntegralInRange<int>(0, 63);
        const output_kind kind = k == 0 ? OUTPUT_IN_THE_WAY : k == 1 ? OUTPUT_NO_FOLDER : k == 2 && o > 0 ? OUTPUT_SAME_AS_PREVIOUS : k == 3 ? OUTPUT_AN_INPUT : OUTPUT_FRESH;
        out_kinds.push_back(kind);
        std::string path = out_dir + "/out" + std::to_string(o);
        if (kind == OUTPUT_NO_FOLDER) path = out_dir + "/missing-folder/out" + std::to_string(o);
        if (kind == OUTPUT_SAME_AS_PREVIOUS) path = out_paths.back();
        if (kind == OUTPUT_AN_INPUT) path = in_paths[o];
        out_paths.push_back(path);
    }
    bool declared_wrong[n_files];
    for (size_t i = 0; i < n_files; i++) declared_wrong[i] = d.ConsumeIntegralInRange<int>(0, 15) == 0;
    merge_tuning tuning;
    tuning.window_bytes = 4096u * d.ConsumeIntegralInRange<uint64_t>(1, 4);
    tuning.direct_io = d.ConsumeBool() ? 1 : 0;
    tuning.prefetch = d.ConsumeBool() ? 1 : 0;
    tuning.release_inputs = d.ConsumeIntegralInRange<int>(0, 4);
    tuning.interleave = d.ConsumeBool() ? 1 : 0;
    tuning.fsync = 0; // nothing to make durable in a scratch folder

    fuzz_shape shape;
    shape.scale = 2048;
    merge_job job = fuzz_job_builder(d, shape).build(in_paths, out_paths);
    job.tuning = tuning;
    for (size_t i = 0; i < job.inputs.size(); i++)
        if (!declared_wrong[i] && !job.inputs[i].path.empty()) job.inputs[i].size = inputs[i].bytes.size();

    // Only jobs whose outputs stay small reach the engine (the engine streams every byte).
    const merge_status valid = merge_job_validate(job);
    if (valid.ok()) {
        for (const merge_output & out : job.outputs)
            if (out.size > max_output_bytes) return -1; // not added to the corpus
    }

    // Lay out the files; the engine opens every listed input, in order, then every output.
    for (size_t i = 0; i < n_files; i++) {
        ::remove(in_paths[i].c_str());
        ::rmdir(in_paths[i].c_str());
        if (inputs[i].kind == INPUT_REGULAR) write_file(in_paths[i], inputs[i].bytes);
        if (inputs[i].kind == INPUT_DIRECTORY) FUZZ_CHECK(::mkdir(in_paths[i].c_str(), 0755) == 0, "mkdir");
    }
    const std::vector<uint8_t> in_the_way = {'k', 'e', 'e', 'p'};
    for (size_t o = 0; o < 3; o++) ::remove((out_dir + "/out" + std::to_string(o)).c_str());
    for (size_t o = 0; o < out_kinds.size(); o++)
        if (out_kinds[o] == OUTPUT_IN_THE_WAY) write_file(out_paths[o], in_the_way);

    // The code the first bad file calls for, if validation passes.
    merge_error expected = merge_error::OK;
    if (!valid.ok()) {
        expected = valid.code;
    } else if (!merge_kernels_for(job.isa)) {
        expected = merge_error::INVALID_ARGUMENT;
    } else {
        for (size_t i = 0; i < job.inputs.size() && expected == merge_error::OK; i++) {
            if (inputs[i].kind == INPUT_MISSING) expected = merge_error::FILE_NOT_FOUND;
            else if (inputs[i].kind == INPUT_DIRECTORY) expected = merge_error::IO_ERROR;
            else if (job.inputs[i].size != inputs[i].bytes.size()) expected = merge_error::SIZE_MISMATCH;
        }
        for (size_t o = 0; o < job.outputs.size() && expected == merge_error::OK; o++) {
            if (exists(job.outputs[o].path)) expected = merge_error::OUTPUT_EXISTS;
            else if (out_kinds[o] == OUTPUT_NO_FOLDER) expected = merge_error::FILE_NOT_FOUND;
            else if (out_kinds[o] == OUTPUT_SAME_AS_PREVIOUS) expected = merge_error::OUTPUT_EXISTS; // created a moment before
        }
    }
    std::vector<bool> existed(job.outputs.size());
    for (size_t o = 0; o < job.outputs.size(); o++) existed[o] = exists(job.outputs[o].path);

    merge_result result;
    const merge_status s = merge_engine_run(job, &result);
    fuzz_count_outcome(s.code);
    FUZZ_CHECK(s.code == expected, "got %s (%s), want %s", merge_error_name(s.code), s.message.c_str(), merge_error_name(expected));
    if (!s.ok()) FUZZ_CHECK(!s.message.empty(), "%s without a message", merge_error_name(s.code));

    // Inputs and files in the way are never written.
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i < n_files; i++)
        if (inputs[i].kind == INPUT_REGULAR) {
            FUZZ_CHECK(read_file(in_paths[i], &bytes) && bytes == inputs[i].bytes, "input %zu changed", i);
        }
    for (size_t o = 0; o < out_kinds.size(); o++)
        if (out_kinds[o] == OUTPUT_IN_THE_WAY) FUZZ_CHECK(read_file(out_paths[o], &bytes) && bytes == in_the_way, "a file in the way changed");

    if (!s.ok()) {
        for (size_t o = 0; o < job.outputs.size(); o++)
            if (!existed[o]) FUZZ_CHECK(!exists(job.outputs[o].path), "failed job (%s) left output %zu", merge_error_name(s.code), o);
        return 0;
    }

    // Success: every byte of every output is accounted for.
    FUZZ_CHECK(result.crc32.size() == job.outputs.size(), "crc32 per output");
    for (size_t o = 0; o < job.outputs.size(); o++) {
        const merge_output & out = job.outputs[o];
        FUZZ_CHECK(read_file(out.path, &bytes), "output %zu missing after success", o);
        FUZZ_CHECK(bytes.size() == out.size, "output %zu has %zu bytes, want %llu", o, bytes.size(), (unsigned long long) out.size);
        std::vector<bool> covered(bytes.size(), false);
        for (const merge_literal & lit : out.literals) {
            FUZZ_CHECK(lit.data.empty() || std::memcmp(&bytes[lit.offset], lit.data.data(), lit.data.size()) == 0, "literal at %llu differs", (unsigned long long) lit.offset);
            for (size_t b = 0; b < lit.data.size(); b++) covered[lit.offset + b] = true;
        }
        for (const merge_piece & p : job.pieces)
            for (const merge_write & w : p.writes) {
                if (w.output != o) continue;
                const size_t len = (size_t) (p.n * st_dtype_size(w.dtype));
                for (size_t b = 0; b < len; b++) covered[w.offset + b] = true;
                if (w.source.kind == MERGE_OPERAND_INPUT && w.source.dtype == w.dtype && len > 0) {
                    const std::vector<uint8_t> & src = inputs[w.source.file].bytes;
                    FUZZ_CHECK(std::memcmp(&bytes[w.offset], &src[w.source.offset], len) == 0, "raw copy of %s differs", p.name.c_str());
                }
            }
        for (size_t b = 0; b < bytes.size(); b++) FUZZ_CHECK(covered[b] || bytes[b] == 0, "gap byte %zu of output %zu is not zero", b, o);
        FUZZ_CHECK(result.crc32[o].size() == out.crc32_ranges.size(), "crc32 ranges");
        for (size_t c = 0; c < out.crc32_ranges.size(); c++) {
            const merge_range & r = out.crc32_ranges[c];
            FUZZ_CHECK(result.crc32[o][c] == crc32_ref(bytes.data() + r.offset, (size_t) r.length), "crc32 of range %zu differs", c);
        }
        ::remove(out.path.c_str());
    }
    return 0;
}
