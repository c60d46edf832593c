// Core tests without Node: merge_job_validate on hand-made and randomly mutated jobs (it must
// never crash, read out of bounds or accept an out-of-range operand), and every SIMD kernel
// table against the scalar reference over exhaustive f16/bf16 inputs and random fp32 bits.
// Build: cmake -S . -B build-test -DTENSORMERGE_BUILD_TESTS=ON [-DTENSORMERGE_SANITIZE=address,undefined|thread]
//        cmake --build build-test --target tensormerge_core_test && build-test/tensormerge_core_test
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>
#include <csetjmp>
#include <csignal>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <chrono>
#include <thread>

#include "core/cpu.h"
#include "core/crc32.h"
#include "core/dtype.h"
#include "core/engine.h"
#include "core/fault_guard.h"
#include "core/job.h"
#include "core/kernels.h"

namespace {

int failures = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                 \
            std::fprintf(stderr, "\n");                                        \
        }                                                                      \
    } while (0)

merge_operand input(uint32_t file, uint64_t offset, uint32_t dtype) {
    merge_operand a;
    a.kind = MERGE_OPERAND_INPUT;
    a.file = file;
    a.offset = offset;
    a.dtype = dtype;
    return a;
}

merge_operand op_ref(uint32_t index) {
    merge_operand a;
    a.kind = MERGE_OPERAND_OP;
    a.index = index;
    return a;
}

/** Two inputs, one output, one add-difference piece written as F16 after a literal. */
merge_job valid_job() {
    merge_job job;
    job.inputs = {{"a", 1000}, {"b", 4000}};
    merge_output out;
    out.path = "out";
    out.size = 208;
    out.literals.push_back({0, std::vector<uint8_t>(8, 1)});
    out.crc32_ranges.push_back({0, 208});
    job.outputs.push_back(out);
    merge_piece p;
    p.name = "t";
    p.n = 100;
    merge_op op;
    op.kernel = MERGE_KERNEL_ADD_DIFFERENCE;
    op.args = {input(0, 1, ST_DTYPE_F32), input(1, 3, ST_DTYPE_F64), input(0, 401, ST_DTYPE_BF16)};
    op.params = {0.5f};
    op.round = ST_DTYPE_F16;
    p.ops.push_back(op);
    merge_op copy;
    copy.kernel = MERGE_KERNEL_COPY;
    copy.args = {op_ref(0)};
    copy.round = ST_DTYPE_F32;
    p.ops.push_back(copy);
    merge_write w;
    w.output = 0;
    w.offset = 8;
    w.dtype = ST_DTYPE_F16;
    w.source = op_ref(1);
    p.writes.push_back(w);
    job.pieces.push_back(p);
    return job;
}

const char * code_of(const merge_job & job) { return merge_error_name(merge_job_validate(job).code); }

void test_validate_cases() {
    CHECK(merge_job_validate(valid_job()).ok(), "valid job refused: %s", merge_job_validate(valid_job()).message.c_str());
    struct mutation {
        const char * name;
        void (*apply)(merge_job &);
        const char * code;
    };
    const mutation cases[] = {
        {"input past end", [](merge_job & j) { j.pieces[0].ops[0].args[0].offset = 601; }, "INVALID_OFFSET"},
        {"huge n", [](merge_job & j) { j.pieces[0].n = UINT64_MAX / 2; }, "INVALID_OFFSET"},
        {"offset overflow", [](merge_job & j) { j.pieces[0].ops[0].args[1].offset = UINT64_MAX - 10; }, "INVALID_OFFSET"},
        {"write past end", [](merge_job & j) { j.pieces[0].writes[0].offset = 9; }, "INVALID_OFFSET"},
        {"literal past end", [](merge_job & j) { j.outputs[0].literals[0].offset = 201; }, "INVALID_OFFSET"},
        {"literal over write", [](merge_job & j) { j.outputs[0].literals[0].offset = 7; }, "INVALID_OFFSET"},
        {"crc past end", [](merge_job & j) { j.outputs[0].crc32_ranges[0].length = 209; }, "INVALID_OFFSET"},
        {"bad dtype", [](merge_job & j) { j.pieces[0].ops[0].args[2].dtype = 15; }, "DTYPE_UNSUPPORTED"},
        {"int math", [](merge_job & j) { j.pieces[0].ops[0].args[2].dtype = ST_DTYPE_I16; }, "DTYPE_UNSUPPORTED"},
        {"bad round", [](merge_job & j) { j.pieces[0].ops[0].round = ST_DTYPE_U8; }, "DTYPE_UNSUPPORTED"},
        {"int store", [](merge_job & j) { j.pieces[0].writes[0].dtype = ST_DTYPE_I16; }, "DTYPE_UNSUPPORTED"},
        {"forward ref", [](merge_job & j) { j.pieces[0].ops[1].args[0].index = 1; }, "INVALID_ARGUMENT"},
        {"source ref", [](merge_job & j) { j.pieces[0].writes[0].source.index = 2; }, "INVALID_ARGUMENT"},
        {"arity", [](merge_job & j) { j.pieces[0].ops[0].args.pop_back(); }, "INVALID_ARGUMENT"},
        {"kernel", [](merge_job & j) { j.pieces[0].ops[0].kernel = MERGE_KERNEL_COUNT; }, "INVALID_ARGUMENT"},
        {"param count", [](merge_job & j) { j.pieces[0].ops[0].params.push_back(0.5f); }, "INVALID_ARGUMENT"},
        {"param not finite", [](merge_job & j) { j.pieces[0].ops[0].kernel = MERGE_KERNEL_TRAIN_DIFFERENCE; j.pieces[0].ops[0].params = {INFINITY}; }, "INVALID_ARGUMENT"},
        {"params", [](merge_job & j) { j.pieces[0].ops[0].params.clear(); }, "INVALID_ARGUMENT"},
        {"input index", [](merge_job & j) { j.pieces[0].ops[0].args[0].file = 2; }, "INVALID_ARGUMENT"},
        {"output index", [](merge_job & j) { j.pieces[0].writes[0].output = 1; }, "INVALID_ARGUMENT"},
        {"threads", [](merge_job & j) { j.threads = 0; }, "INVALID_ARGUMENT"},
    };
    for (const mutation & m : cases) {
        merge_job job = valid_job();
        m.apply(job);
        CHECK(std::strcmp(code_of(job), m.code) == 0, "%s: got %s, want %s", m.name, code_of(job), m.code);
    }
}

/** Random mutations of every numeric field: validation must not crash (ASan/UBSan builds). */
void test_validate_fuzz() {
    std::mt19937_64 rng(1);
    const uint64_t interesting[] = {0, 1, 2, 7, 8, 100, 207, 208, 209, 999, 1000, 4000, UINT32_MAX, UINT64_MAX / 8, UINT64_MAX - 1, UINT64_MAX};
    auto pick = [&]() -> uint64_t { return rng() % 3 == 0 ? rng() : interesting[rng() % (sizeof(interesting) / sizeof(interesting[0]))]; };
    int accepted = 0;
    for (int iter = 0; iter < 200000; iter++) {
        merge_job job = valid_job();
        const int n_mut = 1 + (int) (rng() % 3);
        for (int k = 0; k < n_mut; k++) {
            merge_piece & p = job.pieces[0];
            switch (rng() % 12) {
                case 0: p.n = pick(); break;
                case 1: p.ops[rng() % 2].kernel = (uint32_t) pick(); break;
                case 2: p.ops[0].args[rng() % 3].offset = pick(); break;
                case 3: p.ops[0].args[rng() % 3].dtype = (uint32_t) pick(); break;
                case 4: p.ops[0].args[rng() % 3].file = (uint32_t) pick(); break;
                case 5: p.ops[1].args[0].index = (uint32_t) pick(); break;
                case 6: p.writes[0].offset = pick(); break;
                case 7: p.writes[0].dtype = (uint32_t) pick(); break;
                case 8: p.writes[0].source = rng() % 2 ? op_ref((uint32_t) pick()) : input((uint32_t) (rng() % 3), pick(), (uint32_t) (rng() % 16)); break;
                case 9: job.outputs[0].size = pick(); break;
                case 10: job.outputs[0].literals[0].offset = pick(); break;
                case 11: job.inputs[rng() % 2].size = pick(); break;
            }
        }
        merge_status s = merge_job_validate(job);
        if (!s.ok()) continue;
        accepted++;
        // Accepted: every operand must really be in range (recomputed with 128-bit math).
        for (const merge_piece & p : job.pieces) {
            for (size_t k = 0; k < p.ops.size(); k++)
                for (const merge_operand & a : p.ops[k].args) {
                    if (a.kind == MERGE_OPERAND_OP) {
                        CHECK(a.index < k, "accepted forward op ref");
                        continue;
                    }
                    CHECK(a.file < job.inputs.size(), "accepted bad file");
                    const unsigned __int128 end = (unsigned __int128) a.offset + (unsigned __int128) p.n * st_dtype_size(a.dtype);
                    CHECK(end <= job.inputs[a.file].size, "accepted input range past the end");
                }
            for (const merge_write & w : p.writes) {
                const unsigned __int128 end = (unsigned __int128) w.offset + (unsigned __int128) p.n * st_dtype_size(w.dtype);
                CHECK(end <= job.outputs[w.output].size, "accepted write past the end");
                if (w.source.kind == MERGE_OPERAND_INPUT) {
                    const unsigned __int128 in_end = (unsigned __int128) w.source.offset + (unsigned __int128) p.n * st_dtype_size(w.source.dtype);
                    CHECK(w.source.file < job.inputs.size() && in_end <= job.inputs[w.source.file].size, "accepted source past the end");
                }
            }
        }
    }
    CHECK(accepted > 0, "fuzz never produced a valid job");
    std::printf("validate fuzz: %d of 200000 mutated jobs accepted, all in range\n", accepted);
}

bool same_bits(const void * a, const void * b, size_t n) { return std::memcmp(a, b, n) == 0; }

void test_kernels_against_scalar(const merge_kernels * k) {
    const merge_kernels * ref = merge_kernels_scalar();
    // every f16 and bf16 pattern, at an odd byte offset, loaded and rounded
    std::vector<uint8_t> raw(65536 * 2 + 1);
    for (uint32_t h = 0; h < 65536; h++) std::memcpy(&raw[1 + 2 * h], &h, 2);
    std::vector<float> x(65536), y(65536);
    for (int pass = 0; pass < 2; pass++) {
        merge_load_fn load_k = pass ? k->load_bf16 : k->load_f16, load_r = pass ? ref->load_bf16 : ref->load_f16;
        load_k(x.data(), &raw[1], 65536);
        load_r(y.data(), &raw[1], 65536);
        CHECK(same_bits(x.data(), y.data(), 65536 * 4), "%s load %s differs", k->isa, pass ? "bf16" : "f16");
    }
    // random fp32 bits (every exponent), odd lengths
    std::mt19937 rng(7);
    const size_t n = 1 << 20;
    std::vector<uint32_t> bits(n);
    for (size_t i = 0; i < n; i++) {
        uint32_t b = rng();
        if (i % 4 == 0) b = (b & 0x807fffffu) | ((uint32_t) (100 + (rng() % 56)) << 23); // near the f16 range
        bits[i] = b;
    }
    std::vector<float> a(n), b(n), c(n);
    std::memcpy(a.data(), bits.data(), n * 4);
    for (size_t i = 0; i < n; i++) b[i] = a[(i * 7919) % n], c[i] = a[(i * 104729) % n];
    std::vector<uint8_t> out_k(n * 8 + 1), out_r(n * 8 + 1);
    const size_t m = n - 3;
    struct store_case {
        const char * name;
        merge_store_fn kf, rf;
        size_t size;
    } stores[] = {{"f16", k->store_f16, ref->store_f16, 2}, {"bf16", k->store_bf16, ref->store_bf16, 2}, {"f64", k->store_f64, ref->store_f64, 8},
                  {"f8_e4m3", k->store_f8_e4m3, ref->store_f8_e4m3, 1}, {"f8_e5m2", k->store_f8_e5m2, ref->store_f8_e5m2, 1}};
    for (const store_case & s : stores) {
        s.kf(&out_k[1], a.data(), m);
        s.rf(&out_r[1], a.data(), m);
        CHECK(same_bits(&out_k[1], &out_r[1], m * s.size), "%s store %s differs", k->isa, s.name);
    }
    // f64 loads of random doubles, including NaNs and values outside the f32 range
    std::vector<uint8_t> dbl(n * 8 + 1);
    for (size_t i = 0; i < n; i++) {
        const uint64_t d = ((uint64_t) rng() << 32) | rng();
        std::memcpy(&dbl[1 + 8 * i], &d, 8);
    }
    k->load_f64(x.data(), &dbl[1], 65536 - 5);
    ref->load_f64(y.data(), &dbl[1], 65536 - 5);
    CHECK(same_bits(x.data(), y.data(), (65536 - 5) * 4), "%s load f64 differs", k->isa);

    std::vector<float> rk(n), rr(n);
    auto compare = [&](const char * what) {
        // NaN payloads may differ only when both operands were NaN (operand order is the compiler's)
        for (size_t i = 0; i < m; i++) {
            if (std::isnan(rk[i]) && std::isnan(rr[i])) continue;
            if (!same_bits(&rk[i], &rr[i], 4)) {
                CHECK(false, "%s %s differs at %zu", k->isa, what, i);
                return;
            }
        }
    };
    k->weighted_sum(rk.data(), a.data(), b.data(), 0.3f, 0.7f, m);
    ref->weighted_sum(rr.data(), a.data(), b.data(), 0.3f, 0.7f, m);
    compare("weighted_sum");
    k->add_difference(rk.data(), a.data(), b.data(), c.data(), 0.55f, m);
    ref->add_difference(rr.data(), a.data(), b.data(), c.data(), 0.55f, m);
    compare("add_difference");
    k->lerp(rk.data(), a.data(), b.data(), 0.123f, m);
    ref->lerp(rr.data(), a.data(), b.data(), 0.123f, m);
    compare("lerp");
    rk = a, rr = a;
    k->round_f16(rk.data(), m), ref->round_f16(rr.data(), m);
    CHECK(same_bits(rk.data(), rr.data(), m * 4), "%s round_f16 differs", k->isa);
    rk = a, rr = a;
    k->round_bf16(rk.data(), m), ref->round_bf16(rr.data(), m);
    CHECK(same_bits(rk.data(), rr.data(), m * 4), "%s round_bf16 differs", k->isa);
    rk = a, rr = a;
    k->round_f8_e4m3(rk.data(), m), ref->round_f8_e4m3(rr.data(), m);
    CHECK(same_bits(rk.data(), rr.data(), m * 4), "%s round_f8_e4m3 differs", k->isa);
    rk = a, rr = a;
    k->round_f8_e5m2(rk.data(), m), ref->round_f8_e5m2(rr.data(), m);
    CHECK(same_bits(rk.data(), rr.data(), m * 4), "%s round_f8_e5m2 differs", k->isa);
    // fp8 loads: every code, at an odd address
    std::vector<uint8_t> codes(4096 + 1);
    for (size_t i = 0; i < codes.size(); i++) codes[i] = (uint8_t) (i * 37 + 11);
    k->load_f8_e4m3(rk.data(), &codes[1], 4096 - 3), ref->load_f8_e4m3(rr.data(), &codes[1], 4096 - 3);
    CHECK(same_bits(rk.data(), rr.data(), (4096 - 3) * 4), "%s load f8_e4m3 differs", k->isa);
    k->load_f8_e5m2(rk.data(), &codes[1], 4096 - 3), ref->load_f8_e5m2(rr.data(), &codes[1], 4096 - 3);
    CHECK(same_bits(rk.data(), rr.data(), (4096 - 3) * 4), "%s load f8_e5m2 differs", k->isa);
}

bool file_exists(const std::string & path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

std::vector<uint8_t> read_file(const std::string & path) {
    std::vector<uint8_t> data;
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) return data;
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

/** The whole engine (threads, writer, windows, cleanup) on real files: run under the sanitizers. */
void test_engine() {
    char tmpl[] = "/tmp/tm-core-test-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string in = dir + "/in.bin";
    const uint64_t n = 3u << 20; // 3M F32 elements: several 1 MiB chunks and windows
    std::vector<float> values(n);
    std::mt19937 rng(3);
    for (float & v : values) v = (float) ((double) rng() / 4294967296.0 - 0.5);
    {
        FILE * f = std::fopen(in.c_str(), "wb");
        const uint8_t lead = 9;
        std::fwrite(&lead, 1, 1, f);
        std::fwrite(values.data(), 4, n, f);
        std::fclose(f);
    }
    auto make = [&](const std::string & out, uint32_t threads, merge_isa isa) {
        merge_job job;
        job.inputs = {{in, 1 + n * 4}};
        merge_output o;
        o.path = out;
        o.size = 3 + n * 2;
        o.literals.push_back({0, {1, 2, 3}});
        o.crc32_ranges.push_back({0, o.size});
        job.outputs.push_back(o);
        merge_piece p;
        p.name = "w";
        p.n = n;
        merge_op op;
        op.kernel = MERGE_KERNEL_LERP;
        op.args = {input(0, 1, ST_DTYPE_F32), input(0, 1, ST_DTYPE_F32)};
        op.params = {0.25f};
        op.round = ST_DTYPE_BF16;
        p.ops.push_back(op);
        merge_write w;
        w.output = 0;
        w.offset = 3;
        w.dtype = ST_DTYPE_F16;
        w.source = op_ref(0);
        p.writes.push_back(w);
        job.pieces.push_back(p);
        job.threads = threads;
        job.isa = isa;
        job.tuning.window_bytes = 1u << 20;
        return job;
    };
    merge_result r1, r2;
    merge_status s1 = merge_engine_run(make(dir + "/o1", 1, MERGE_ISA_SCALAR), &r1);
    CHECK(s1.ok(), "engine run failed: %s", s1.message.c_str());
    merge_status s2 = merge_engine_run(make(dir + "/o2", 3, MERGE_ISA_AUTO), &r2);
    CHECK(s2.ok(), "engine run failed: %s", s2.message.c_str());
    CHECK(read_file(dir + "/o1") == read_file(dir + "/o2"), "outputs differ between 1 scalar thread and 3 auto threads");
    CHECK(r1.crc32 == r2.crc32, "crc32 differs");

    // existing output: refused, left alone
    merge_result r3;
    merge_status s3 = merge_engine_run(make(dir + "/o1", 2, MERGE_ISA_AUTO), &r3);
    CHECK(s3.code == merge_error::OUTPUT_EXISTS && file_exists(dir + "/o1"), "existing output: %s", merge_error_name(s3.code));

    // cancel from another thread mid-run: ABORTED and no file
    double control[3] = {0, 0, 0};
    merge_job job = make(dir + "/o4", 2, MERGE_ISA_SCALAR);
    for (int k = 1; k < 200; k++) { // make it slow
        merge_op chain;
        chain.kernel = MERGE_KERNEL_LERP;
        chain.args = {op_ref((uint32_t) k - 1), input(0, 1, ST_DTYPE_F32)};
        chain.params = {0.5f};
        chain.round = ST_DTYPE_F32;
        job.pieces[0].ops.push_back(chain);
    }
    job.pieces[0].writes[0].source = op_ref(199);
    job.control.cells = control;
    job.control.n_cells = 3;
    std::thread canceller([&] {
        for (int i = 0; i < 2000; i++) {
            double done;
            __atomic_load(&control[1], &done, __ATOMIC_RELAXED);
            if (done > 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        const double one = 1;
        __atomic_store(&control[0], &one, __ATOMIC_RELAXED);
    });
    merge_result r4;
    merge_status s4 = merge_engine_run(job, &r4);
    canceller.join();
    CHECK(s4.code == merge_error::ABORTED, "cancel: got %s", merge_error_name(s4.code));
    CHECK(!file_exists(dir + "/o4"), "cancelled output left behind");

    unlink((dir + "/o1").c_str());
    unlink((dir + "/o2").c_str());
    unlink(in.c_str());
    rmdir(dir.c_str());
    std::printf("engine: runs, thread/ISA identity, OUTPUT_EXISTS and cancel ok\n");
}

// ---- SIGBUS on a mapped input ------------------------------------------------------------

// The "host" handler (standing for Node's or an embedder's) repairs its own faults: it gives
// the files their page back and returns, so the faulting read runs again and succeeds.
volatile sig_atomic_t host_calls = 0;
int host_fds[2] = {-1, -1};
void host_handler(int, siginfo_t *, void *) {
    host_calls = host_calls + 1;
    if (host_fds[0] < 0) { // after this test: a fault the guard missed must kill the test
        signal(SIGBUS, SIG_DFL);
        return;
    }
    for (int fd : host_fds) (void) !ftruncate(fd, 4096);
}

/** A one-page file, mapped, then truncated to 0: reading the page raises SIGBUS. */
const uint8_t * truncated_page(const std::string & path, int * fd_out) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    std::vector<uint8_t> page(4096, 7);
    CHECK(write(fd, page.data(), page.size()) == 4096, "write");
    void * p = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(ftruncate(fd, 0) == 0, "ftruncate");
    *fd_out = fd;
    return (const uint8_t *) p;
}

/**
 * The guard catches exactly its own faults: in a guarded body on a declared range -> faulted;
 * outside a body, or on an address it did not declare -> the handler installed before ours
 * (standing for Node's or the host's) is called as if ours did not exist. Runs first, so that
 * "before" is this test's handler.
 */
void test_fault_guard() {
    struct sigaction host = {};
    host.sa_sigaction = host_handler;
    host.sa_flags = SA_SIGINFO;
    sigemptyset(&host.sa_mask);
    sigaction(SIGBUS, &host, nullptr);
    CHECK(merge_fault_handler_install(), "install");
    char tmpl[] = "/tmp/tm-core-fault-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const uint8_t * p = truncated_page(dir + "/f", &host_fds[0]);
    const uint8_t * q = truncated_page(dir + "/g", &host_fds[1]);
    const merge_fault_range ranges[] = {{(uintptr_t) p, (uintptr_t) p + 4096}};
    volatile uint8_t sink = 0;

    uintptr_t address = 0;
    merge_fault_outcome o = merge_fault_run(ranges, 1, &address, [&] { sink = sink + p[100]; });
    CHECK(o == merge_fault_outcome::faulted && address == (uintptr_t) p + 100, "guarded fault: outcome %d", (int) o);
    CHECK(host_calls == 0, "the host handler saw our fault");
    // Again: the jump restored the signal mask, so a second fault is caught too.
    o = merge_fault_run(ranges, 1, &address, [&] { sink = sink + p[200]; });
    CHECK(o == merge_fault_outcome::faulted && address == (uintptr_t) p + 200, "second guarded fault");

    // Not a declared range: the host's handler gets it, repairs it, and the body goes on.
    o = merge_fault_run(ranges, 1, &address, [&] { sink = sink + q[0]; });
    CHECK(o == merge_fault_outcome::ok && host_calls == 1, "undeclared address: outcome %d, host handler calls %d", (int) o, (int) host_calls);
    // Declared by no running guard: the host's too.
    CHECK(ftruncate(host_fds[0], 0) == 0 && ftruncate(host_fds[1], 0) == 0, "ftruncate");
    sink = sink + p[0];
    CHECK(host_calls == 2, "unguarded fault: host handler calls %d", (int) host_calls);
    o = merge_fault_run(ranges, 1, &address, [&] { sink = sink + p[1]; });
    CHECK(o == merge_fault_outcome::ok, "a body without fault");

    munmap((void *) p, 4096);
    munmap((void *) q, 4096);
    close(host_fds[0]);
    close(host_fds[1]);
    host_fds[0] = host_fds[1] = -1;
    unlink((dir + "/f").c_str());
    unlink((dir + "/g").c_str());
    rmdir(dir.c_str());
    std::printf("fault guard: own faults caught, others chained to the previous handler\n");
}

/** The engine on an input truncated, then rewritten in place, while it runs. */
void test_engine_input_changes() {
    char tmpl[] = "/tmp/tm-core-change-XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string in = dir + "/in.bin";
    const uint64_t n = 4u << 20; // 16 MiB of F32: 16 windows of 1 MiB
    auto write_input = [&] {
        std::vector<float> values(n, 0.5f);
        FILE * f = std::fopen(in.c_str(), "wb");
        std::fwrite(values.data(), 4, n, f);
        std::fclose(f);
    };
    auto run = [&](const std::string & out, int change) {
        merge_job job;
        job.inputs = {{in, n * 4}};
        merge_output o;
        o.path = out;
        o.size = n * 4;
        job.outputs.push_back(o);
        merge_piece p;
        p.name = "w";
        p.n = n;
        merge_op op;
        op.kernel = MERGE_KERNEL_LERP;
        op.args = {input(0, 0, ST_DTYPE_F32), input(0, 0, ST_DTYPE_F32)};
        op.params = {0.25f};
        op.round = ST_DTYPE_F32;
        p.ops.push_back(op);
        merge_write w;
        w.output = 0;
        w.offset = 0;
        w.dtype = ST_DTYPE_F32;
        w.source = op_ref(0);
        p.writes.push_back(w);
        job.pieces.push_back(p);
        job.threads = 2;
        job.tuning.window_bytes = 1u << 20;
        job.tuning.window_pause_ms = change ? 20 : 0;
        double control[3] = {0, 0, (double) (n * 4)};
        job.control.cells = control;
        job.control.n_cells = 3;
        std::thread changer([&] {
            if (!change) return;
            for (int i = 0; i < 5000; i++) {
                double done;
                __atomic_load(&control[1], &done, __ATOMIC_RELAXED);
                if (done > 0) break;
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            if (change == 1) {
                CHECK(truncate(in.c_str(), 1000000) == 0, "truncate");
            } else {
                const int fd = open(in.c_str(), O_WRONLY);
                const float x = 2.0f;
                CHECK(pwrite(fd, &x, 4, (off_t) (n * 2)) == 4, "pwrite");
                const struct timespec later[2] = {{time(nullptr) + 60, 0}, {time(nullptr) + 60, 0}};
                futimens(fd, later);
                close(fd);
            }
        });
        merge_result r;
        merge_status s = merge_engine_run(job, &r);
        changer.join();
        return s;
    };
    write_input();
    merge_status s = run(dir + "/o1", 1);
    CHECK(s.code == merge_error::FILE_TRUNCATED && s.path == in, "truncated input: %s %s", merge_error_name(s.code), s.message.c_str());
    CHECK(!file_exists(dir + "/o1"), "output of a failed job left behind");
    write_input();
    s = run(dir + "/o2", 0);
    CHECK(s.ok(), "the next job failed: %s", s.message.c_str());
    s = run(dir + "/o3", 2);
    CHECK(s.code == merge_error::INPUT_CHANGED && s.path == in, "rewritten input: %s %s", merge_error_name(s.code), s.message.c_str());
    CHECK(!file_exists(dir + "/o3"), "output of a changed input left behind");
    unlink((dir + "/o2").c_str());
    unlink(in.c_str());
    rmdir(dir.c_str());
    std::printf("engine: truncated input FILE_TRUNCATED, rewritten input INPUT_CHANGED, next job ok\n");
}

void test_crc32() {
    CHECK(merge_crc32_update(0, "123456789", 9) == 0xcbf43926u, "crc32 check value");
    std::mt19937 rng(5);
    std::vector<uint8_t> data(50000);
    for (uint8_t & b : data) b = (uint8_t) rng();
    for (int t = 0; t < 500; t++) {
        const size_t n = rng() % data.size(), k = n ? rng() % (n + 1) : 0;
        const uint32_t whole = merge_crc32_update(0, data.data(), n);
        const uint32_t a = merge_crc32_update(0, data.data(), k), b = merge_crc32_update(0, data.data() + k, n - k);
        CHECK(merge_crc32_combine(a, b, n - k) == whole, "combine at %zu/%zu", k, n);
        CHECK(merge_crc32_update(a, data.data() + k, n - k) == whole, "update continuation");
    }
}

} // namespace

int main() {
    test_fault_guard(); // first: it installs the "host" handler the guard must chain to
    test_crc32();
    test_engine();
    test_engine_input_changes();
    test_validate_cases();
    test_validate_fuzz();
    for (merge_isa isa : {MERGE_ISA_AVX2, MERGE_ISA_AVX512}) {
        if (!merge_isa_supported(isa)) {
            std::printf("%s: not supported here, skipped\n", merge_isa_name(isa));
            continue;
        }
        test_kernels_against_scalar(merge_kernels_for(isa));
        std::printf("%s: kernels match the scalar reference\n", merge_isa_name(isa));
    }
    if (failures) {
        std::fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
