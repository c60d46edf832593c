// The N-API binding: converts a JS job (lib/native/job.ts) into a merge_job, runs it on a
// libuv worker thread, and converts the result or the failure back. No merge logic here.
//
// V8 values are only touched on the JS thread: the job is copied into plain C++ structs
// before queueing. The one exception is the control Float64Array, whose memory the engine
// reads (cancel flag) and writes (progress) with relaxed atomics while JS polls it; the worker
// holds a reference to it so it stays alive for the whole job.
#include <napi.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>

#include "core/buffer_pool.h"
#include "core/cpu.h"
#include "core/dtype.h"
#include "core/engine.h"
#include "core/kernels.h"

namespace {

Napi::Error make_error(Napi::Env env, const char * code, const std::string & message, const std::string & path = {}, const std::string & tensor = {}) {
    Napi::Error e = Napi::Error::New(env, message);
    e.Set("code", Napi::String::New(env, code));
    if (!path.empty()) e.Set("path", Napi::String::New(env, path));
    if (!tensor.empty()) e.Set("tensor", Napi::String::New(env, tensor));
    return e;
}

/** Reads the JS job; throws a Napi::Error with code INVALID_ARGUMENT naming the bad field. */
class job_reader {
public:
    explicit job_reader(Napi::Env env) : env_(env) {}

    void read(Napi::Object js, merge_job * job) {
        Napi::Array inputs = array(js, "inputs", "job");
        job->inputs.resize(inputs.Length());
        for (uint32_t i = 0; i < inputs.Length(); i++) {
            const std::string where = "job.inputs[" + std::to_string(i) + "]";
            Napi::Object o = object(inputs.Get(i), where);
            job->inputs[i].path = string(o, "path", where);
            job->inputs[i].size = u64(o, "size", where);
        }
        Napi::Array outputs = array(js, "outputs", "job");
        job->outputs.resize(outputs.Length());
        for (uint32_t i = 0; i < outputs.Length(); i++) read_output(outputs.Get(i), "job.outputs[" + std::to_string(i) + "]", &job->outputs[i]);
        Napi::Array pieces = array(js, "pieces", "job");
        job->pieces.resize(pieces.Length());
        for (uint32_t i = 0; i < pieces.Length(); i++) read_piece(pieces.Get(i), "job.pieces[" + std::to_string(i) + "]", &job->pieces[i]);

        const uint64_t threads = u64(js, "threads", "job");
        job->threads = threads > 1u << 20 ? 1u << 20 : (uint32_t) threads; // the core caps it with a clear error
        const std::string isa = string(js, "isa", "job");
        if (isa == "auto") job->isa = MERGE_ISA_AUTO;
        else if (isa == "scalar") job->isa = MERGE_ISA_SCALAR;
        else if (isa == "avx2") job->isa = MERGE_ISA_AVX2;
        else if (isa == "avx512") job->isa = MERGE_ISA_AVX512;
        else fail("job.isa must be \"auto\", \"scalar\", \"avx2\" or \"avx512\", got \"" + isa + "\"");
        // Optional (older callers and the tests' jobs leave it out): "auto" then.
        if (js.Has("inputCache") && !js.Get("inputCache").IsUndefined()) {
            const std::string cache = string(js, "inputCache", "job");
            if (cache == "auto") job->input_cache = MERGE_INPUT_CACHE_AUTO;
            else if (cache == "keep") job->input_cache = MERGE_INPUT_CACHE_KEEP;
            else if (cache == "bypass") job->input_cache = MERGE_INPUT_CACHE_BYPASS;
            else fail("job.inputCache must be \"auto\", \"keep\" or \"bypass\", got \"" + cache + "\"");
        }
    }

private:
    Napi::Env env_;
    std::string tensor_;
    std::vector<merge_lowrank> * lowranks_ = nullptr;     // set while reading op arguments
    std::vector<merge_kronecker> * kroneckers_ = nullptr; // set while reading op arguments

    [[noreturn]] void fail(const std::string & what) { throw make_error(env_, "INVALID_ARGUMENT", "invalid job: " + what, {}, tensor_); }

    Napi::Object object(Napi::Value v, const std::string & where) {
        if (!v.IsObject()) fail(where + " must be an object");
        return v.As<Napi::Object>();
    }
    Napi::Array array(Napi::Object o, const char * key, const std::string & where) {
        Napi::Value v = o.Get(key);
        if (!v.IsArray()) fail(where + "." + key + " must be an array");
        return v.As<Napi::Array>();
    }
    std::string string(Napi::Object o, const char * key, const std::string & where) {
        Napi::Value v = o.Get(key);
        if (!v.IsString()) fail(where + "." + key + " must be a string");
        return v.As<Napi::String>().Utf8Value();
    }
    uint64_t u64_value(Napi::Value v, const std::string & what) {
        if (!v.IsNumber()) fail(what + " must be a number");
        const double d = v.As<Napi::Number>().DoubleValue();
        if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) fail(what + " must be a non-negative safe integer");
        return (uint64_t) d;
    }
    uint64_t u64(Napi::Object o, const char * key, const std::string & where) { return u64_value(o.Get(key), where + "." + key); }
    // Ids beyond 32 bits saturate: the core then rejects them with its own code.
    uint32_t id(Napi::Object o, const char * key, const std::string & where) {
        const uint64_t v = u64(o, key, where);
        return v > 0xffffffffu ? 0xffffffffu : (uint32_t) v;
    }

    /** An optional list of u32 (JobOp.stats, JobOp.ints); lists past the core's limits are cut there. */
    std::vector<uint32_t> u32_list(Napi::Object o, const char * key, const std::string & where) {
        std::vector<uint32_t> out;
        Napi::Value v = o.Get(key);
        if (v.IsUndefined()) return out;
        if (!v.IsArray()) fail(where + "." + key + " must be an array");
        Napi::Array a = v.As<Napi::Array>();
        if (a.Length() > 1024) fail(where + "." + key + " is too long");
        out.resize(a.Length());
        for (uint32_t j = 0; j < a.Length(); j++) {
            const uint64_t x = u64_value(a.Get(j), where + "." + key + "[" + std::to_string(j) + "]");
            if (x > 0xffffffffu) fail(where + "." + key + "[" + std::to_string(j) + "] must be a 32-bit unsigned integer");
            out[j] = (uint32_t) x;
        }
        return out;
    }

    void read_output(Napi::Value v, const std::string & where, merge_output * out) {
        Napi::Object o = object(v, where);
        out->path = string(o, "path", where);
        out->size = u64(o, "size", where);
        Napi::Value lits = o.Get("literals");
        if (!lits.IsUndefined()) {
            if (!lits.IsArray()) fail(where + ".literals must be an array");
            Napi::Array a = lits.As<Napi::Array>();
            out->literals.resize(a.Length());
            for (uint32_t i = 0; i < a.Length(); i++) {
                const std::string w = where + ".literals[" + std::to_string(i) + "]";
                Napi::Object l = object(a.Get(i), w);
                out->literals[i].offset = u64(l, "offset", w);
                Napi::Value data = l.Get("data");
                if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) fail(w + ".data must be a Uint8Array");
                Napi::Uint8Array bytes = data.As<Napi::Uint8Array>();
                out->literals[i].data.assign(bytes.Data(), bytes.Data() + bytes.ByteLength());
            }
        }
        Napi::Value ranges = o.Get("crc32Ranges");
        if (!ranges.IsUndefined() && !ranges.IsNull()) {
            if (!ranges.IsArray()) fail(where + ".crc32Ranges must be an array");
            Napi::Array a = ranges.As<Napi::Array>();
            out->crc32_ranges.resize(a.Length());
            for (uint32_t i = 0; i < a.Length(); i++) {
                const std::string w = where + ".crc32Ranges[" + std::to_string(i) + "]";
                Napi::Object r = object(a.Get(i), w);
                out->crc32_ranges[i].offset = u64(r, "offset", w);
                out->crc32_ranges[i].length = u64(r, "length", w);
            }
        }
    }

    void read_lowrank_factor(Napi::Object o, const char * key, const std::string & where, merge_lowrank_factor * f) {
        Napi::Object x = object(o.Get(key), where + "." + key);
        f->file = id(x, "file", where + "." + key);
        f->offset = u64(x, "offset", where + "." + key);
        f->dtype = id(x, "dtype", where + "." + key);
    }

    void read_lowrank_product(Napi::Object o, const std::string & where, merge_lowrank_product * p) {
        p->rank = id(o, "rank", where);
        read_lowrank_factor(o, "up", where, &p->up);
        read_lowrank_factor(o, "down", where, &p->down);
    }

    /** `{kind:"lowrank", …}`, stored in the piece's table (an op argument only; the core checks it). */
    void read_lowrank(Napi::Object o, const std::string & where, merge_operand * op) {
        if (!lowranks_) fail(where + ": a lowrank operand can only be an op argument");
        merge_lowrank lr;
        lr.rows = u64(o, "rows", where);
        lr.cols = u64(o, "cols", where);
        read_lowrank_product(o, where, &lr.product);
        Napi::Value h = o.Get("hadamard");
        if (!h.IsUndefined()) {
            read_lowrank_product(object(h, where + ".hadamard"), where + ".hadamard", &lr.hadamard);
            if (lr.hadamard.rank == 0) fail(where + ".hadamard.rank must be at least 1");
        }
        op->kind = MERGE_OPERAND_LOWRANK;
        op->index = (uint32_t) lowranks_->size();
        lowranks_->push_back(lr);
    }

    void read_kron_factor(Napi::Object o, const char * key, const std::string & where, merge_kron_factor * f) {
        const std::string w = where + "." + key;
        Napi::Object x = object(o.Get(key), w);
        f->rows = u64(x, "rows", w);
        f->cols = u64(x, "cols", w);
        if (!x.Get("full").IsUndefined()) read_lowrank_factor(x, "full", w, &f->full);
        else {
            read_lowrank_product(object(x.Get("product"), w + ".product"), w + ".product", &f->product);
            if (f->product.rank == 0) fail(w + ".product.rank must be at least 1");
        }
    }

    /** `{kind:"kronecker", …}`, stored in the piece's table (an op argument only; the core checks it). */
    void read_kronecker(Napi::Object o, const std::string & where, merge_operand * op) {
        if (!kroneckers_) fail(where + ": a kronecker operand can only be an op argument");
        merge_kronecker k;
        k.rows = u64(o, "rows", where);
        k.cols = u64(o, "cols", where);
        k.kernel = u64(o, "kernel", where);
        k.row_start = u64(o, "rowStart", where);
        read_kron_factor(o, "a", where, &k.a);
        read_kron_factor(o, "b", where, &k.b);
        op->kind = MERGE_OPERAND_KRONECKER;
        op->index = (uint32_t) kroneckers_->size();
        kroneckers_->push_back(k);
    }

    void read_operand(Napi::Value v, const std::string & where, merge_operand * op) {
        Napi::Object o = object(v, where);
        const std::string kind = string(o, "kind", where);
        if (kind == "kronecker") {
            read_kronecker(o, where, op);
            return;
        }
        if (kind == "lowrank") {
            read_lowrank(o, where, op);
            return;
        }
        if (kind == "input") {
            op->kind = MERGE_OPERAND_INPUT;
            op->file = id(o, "file", where);
            op->offset = u64(o, "offset", where);
            op->dtype = id(o, "dtype", where);
        } else if (kind == "op") {
            op->kind = MERGE_OPERAND_OP;
            op->index = id(o, "index", where);
        } else {
            fail(where + ".kind must be \"input\" or \"op\"");
        }
    }

    void read_piece(Napi::Value v, const std::string & where, merge_piece * piece) {
        tensor_.clear();
        Napi::Object o = object(v, where);
        piece->name = string(o, "name", where);
        tensor_ = piece->name;
        piece->n = u64(o, "n", where);
        Napi::Array ops = array(o, "ops", where);
        piece->ops.resize(ops.Length());
        for (uint32_t k = 0; k < ops.Length(); k++) {
            const std::string w = where + ".ops[" + std::to_string(k) + "]";
            Napi::Object op = object(ops.Get(k), w);
            merge_op & dst = piece->ops[k];
            dst.kernel = id(op, "kernel", w);
            Napi::Array args = array(op, "args", w);
            dst.args.resize(args.Length());
            lowranks_ = &piece->lowranks;
            kroneckers_ = &piece->kroneckers;
            for (uint32_t j = 0; j < args.Length(); j++) read_operand(args.Get(j), w + ".args[" + std::to_string(j) + "]", &dst.args[j]);
            lowranks_ = nullptr;
            kroneckers_ = nullptr;
            Napi::Array params = array(op, "params", w);
            dst.params.resize(params.Length());
            for (uint32_t j = 0; j < params.Length(); j++) {
                Napi::Value p = params.Get(j);
                if (!p.IsNumber()) fail(w + ".params[" + std::to_string(j) + "] must be a number");
                dst.params[j] = (float) p.As<Napi::Number>().DoubleValue(); // round to nearest even, as Math.fround
            }
            dst.round = id(op, "round", w);
            dst.stats = u32_list(op, "stats", w);
            dst.ints = u32_list(op, "ints", w);
            Napi::Value start = op.Get("elementStart");
            if (!start.IsUndefined()) dst.element_start = u64_value(start, w + ".elementStart");
        }
        Napi::Value reductions = o.Get("reductions");
        if (!reductions.IsUndefined()) {
            if (!reductions.IsArray()) fail(where + ".reductions must be an array");
            Napi::Array a = reductions.As<Napi::Array>();
            piece->reductions.resize(a.Length());
            for (uint32_t k = 0; k < a.Length(); k++) {
                const std::string w = where + ".reductions[" + std::to_string(k) + "]";
                Napi::Object r = object(a.Get(k), w);
                merge_reduction & dst = piece->reductions[k];
                dst.kind = id(r, "kind", w);
                Napi::Array args = array(r, "args", w);
                dst.args.resize(args.Length());
                for (uint32_t j = 0; j < args.Length(); j++) read_operand(args.Get(j), w + ".args[" + std::to_string(j) + "]", &dst.args[j]);
                Napi::Value k_value = r.Get("k");
                if (!k_value.IsUndefined()) dst.k = u64_value(k_value, w + ".k");
                Napi::Value columns = r.Get("columns");
                if (!columns.IsUndefined()) dst.columns = u64_value(columns, w + ".columns");
            }
        }
        Napi::Array writes = array(o, "writes", where);
        piece->writes.resize(writes.Length());
        for (uint32_t k = 0; k < writes.Length(); k++) {
            const std::string w = where + ".writes[" + std::to_string(k) + "]";
            Napi::Object wr = object(writes.Get(k), w);
            merge_write & dst = piece->writes[k];
            dst.output = id(wr, "output", w);
            dst.offset = u64(wr, "offset", w);
            dst.dtype = id(wr, "dtype", w);
            read_operand(wr.Get("source"), w + ".source", &dst.source);
        }
        tensor_.clear();
    }
};

/** Benchmark knobs, outside the job contract. */
void read_tuning(merge_tuning * t) {
    if (const char * v = std::getenv("TENSORMERGE_WINDOW_MIB")) {
        const long mib = std::atol(v);
        if (mib > 0 && mib <= 4096) t->window_bytes = (uint64_t) mib << 20;
    }
    if (const char * v = std::getenv("TENSORMERGE_DIRECT_IO")) t->direct_io = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_PREFETCH")) t->prefetch = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_RELEASE_INPUTS")) t->release_inputs = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_INTERLEAVE")) t->interleave = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_BUFFERED_READS")) t->buffered_reads = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_READ_BUFFER_MIB")) {
        const long mib = std::atol(v);
        if (mib > 0 && mib <= 1024) t->read_buffer_bytes = (uint64_t) mib << 20;
    }
    if (const char * v = std::getenv("TENSORMERGE_DIRECT_READS")) t->direct_reads = std::atoi(v);
    if (const char * v = std::getenv("TENSORMERGE_READ_PIECE_KIB")) {
        const long kib = std::atol(v);
        if (kib >= 4 && kib <= (256l << 10)) t->read_piece_bytes = (uint64_t) kib << 10;
    }
    if (const char * v = std::getenv("TENSORMERGE_READERS")) {
        const int n = std::atoi(v);
        if (n >= 1 && n <= 16) t->readers = n;
    }
    // Windows in flight: a bake's windows differ ~50x in compute time (bench/RESULTS.md,
    // "Bake: where the two threads wait"), which more, smaller windows could even out.
    if (const char * v = std::getenv("TENSORMERGE_OUTPUT_BUFFERS")) {
        const int n = std::atoi(v);
        if (n >= 2 && n <= 64) t->output_buffers = n;
    }
    if (const char * v = std::getenv("TENSORMERGE_SAMPLED_RESIDENCY")) t->sampled_residency = std::atoi(v);
    // Ramp windows (engine_stream.cc window_end): the first write starts after a small window's compute,
    // and the last write after compute ends is short. 0 turns it off (every window full size).
    if (const char * v = std::getenv("TENSORMERGE_RAMP_KIB")) {
        const long kib = std::atol(v);
        if (kib >= 0 && kib <= (4l << 20)) t->ramp_bytes = (uint64_t) kib << 10;
    }
    // Tests: pause after each window so a test can change an input at a known point of the job.
    if (const char * v = std::getenv("TENSORMERGE_WINDOW_PAUSE_MS")) {
        const long ms = std::atol(v);
        if (ms > 0 && ms <= 10000) t->window_pause_ms = (int) ms;
    }
}

class run_job_worker : public Napi::AsyncWorker {
public:
    run_job_worker(Napi::Env env, std::unique_ptr<merge_job> job, Napi::Float64Array control)
        : Napi::AsyncWorker(env, "tensormerge.runJob"), deferred_(Napi::Promise::Deferred::New(env)), job_(std::move(job)) {
        control_ = Napi::Persistent(control);
    }

    Napi::Promise promise() const { return deferred_.Promise(); }

    void Execute() override {
        try {
            status_ = merge_engine_run(*job_, &result_);
        } catch (...) {
            status_ = merge_status::fail(merge_error::INTERNAL, "unexpected exception in the native engine");
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        Napi::HandleScope scope(env);
        if (!status_.ok()) {
            deferred_.Reject(make_error(env, merge_error_name(status_.code), status_.message, status_.path, status_.tensor).Value());
            return;
        }
        Napi::Object r = Napi::Object::New(env);
        r.Set("bytesWritten", Napi::Number::New(env, (double) result_.bytes_written));
        r.Set("isa", Napi::String::New(env, result_.isa));
        r.Set("threads", Napi::Number::New(env, result_.threads));
        Napi::Array crc = Napi::Array::New(env, result_.crc32.size());
        for (uint32_t o = 0; o < result_.crc32.size(); o++) {
            Napi::Array per = Napi::Array::New(env, result_.crc32[o].size());
            for (uint32_t i = 0; i < result_.crc32[o].size(); i++) per.Set(i, Napi::Number::New(env, result_.crc32[o][i]));
            crc.Set(o, per);
        }
        r.Set("crc32", crc);
        Napi::Array nonfinite = Napi::Array::New(env, result_.nonfinite.size());
        for (uint32_t o = 0; o < result_.nonfinite.size(); o++) {
            Napi::Object c = Napi::Object::New(env);
            c.Set("nan", Napi::Number::New(env, (double) result_.nonfinite[o].nan));
            c.Set("inf", Napi::Number::New(env, (double) result_.nonfinite[o].inf));
            nonfinite.Set(o, c);
        }
        r.Set("nonFinite", nonfinite);
        Napi::Object stats = Napi::Object::New(env);
        for (const auto & kv : result_.stats) stats.Set(kv.first, Napi::Number::New(env, kv.second));
        r.Set("stats", stats);
        deferred_.Resolve(r);
    }

    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

private:
    Napi::Promise::Deferred deferred_;
    std::unique_ptr<merge_job> job_;
    Napi::Reference<Napi::Float64Array> control_;
    merge_status status_;
    merge_result result_;
};

/** runJob(job) -> Promise<JobResult>; throws synchronously (code INVALID_ARGUMENT) on a malformed job. */
Napi::Value run_job(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) throw make_error(env, "INVALID_ARGUMENT", "runJob expects a job object");
    Napi::Object js = info[0].As<Napi::Object>();
    Napi::Value control = js.Get("control");
    if (!control.IsTypedArray() || control.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
        throw make_error(env, "INVALID_ARGUMENT", "invalid job: job.control must be a Float64Array");
    Napi::Float64Array cells = control.As<Napi::Float64Array>();
    if (cells.ElementLength() < 2) throw make_error(env, "INVALID_ARGUMENT", "invalid job: job.control must have at least 2 elements");

    auto job = std::make_unique<merge_job>();
    job_reader(env).read(js, job.get());
    job->control.cells = cells.Data();
    job->control.n_cells = cells.ElementLength();
    read_tuning(&job->tuning);

    auto * worker = new run_job_worker(env, std::move(job), cells);
    Napi::Promise promise = worker->promise();
    worker->Queue(); // the worker deletes itself after OnOK/OnError
    return promise;
}

/** Faults in pooled output window buffers on a libuv worker (buffer_pool.h). */
class prepare_buffers_worker : public Napi::AsyncWorker {
public:
    prepare_buffers_worker(Napi::Env env, std::vector<std::shared_ptr<merge_io_buffer>> buffers)
        : Napi::AsyncWorker(env, "tensormerge.prepareOutputBuffers"), deferred_(Napi::Promise::Deferred::New(env)), buffers_(std::move(buffers)) {}

    Napi::Promise promise() const { return deferred_.Promise(); }
    void Execute() override { merge_buffers_populate(buffers_); }
    void OnOK() override {
        buffers_.clear(); // the pool (or the job that took them) keeps them
        deferred_.Resolve(Napi::Number::New(Env(), (double) merge_buffer_pool_bytes()));
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

private:
    Napi::Promise::Deferred deferred_;
    std::vector<std::shared_ptr<merge_io_buffer>> buffers_;
};

/**
 * prepareOutputBuffers(maxOutputBytes) -> Promise<number>: pools the output window buffers of a
 * job about to be planned whose largest output has that size, and faults them in on a worker,
 * so the job's first windows do not pay the first touch of fresh memory. Resolves to the bytes
 * pooled when done. TENSORMERGE_PREFAULT_BUFFERS=0 pools nothing (the engine allocates as before).
 * The next job to end empties the pool; discardOutputBuffers() empties it now.
 */
Napi::Value prepare_output_buffers(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw make_error(env, "INVALID_ARGUMENT", "prepareOutputBuffers expects the largest output's size in bytes");
    const double max_output = info[0].As<Napi::Number>().DoubleValue();
    if (!(max_output >= 0) || max_output > 9.0e15) throw make_error(env, "INVALID_ARGUMENT", "prepareOutputBuffers: invalid output size");
    std::vector<std::shared_ptr<merge_io_buffer>> buffers;
    const char * knob = std::getenv("TENSORMERGE_PREFAULT_BUFFERS");
    if (max_output > 0 && !(knob && std::atoi(knob) == 0)) {
        merge_tuning tuning;
        read_tuning(&tuning);
        const int n = std::max(2, std::min(64, tuning.output_buffers));
        try {
            buffers = merge_buffer_pool_add(merge_window_buffer_bytes(tuning, (uint64_t) max_output), n);
        } catch (const std::bad_alloc &) {
            merge_buffer_pool_clear(); // advice only: the job allocates its own (and reports memory errors)
            buffers.clear();
        }
    }
    auto * worker = new prepare_buffers_worker(env, std::move(buffers));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
}

/** discardOutputBuffers(): empties the pool of prepareOutputBuffers (a job planned but not run). */
Napi::Value discard_output_buffers(const Napi::CallbackInfo & info) {
    merge_buffer_pool_clear();
    return info.Env().Undefined();
}

/** capabilities() -> { isas, best, cpu, kernels, dtypes, errorCodes } */
Napi::Value capabilities(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    Napi::Array isas = Napi::Array::New(env);
    for (merge_isa isa : {MERGE_ISA_SCALAR, MERGE_ISA_AVX2, MERGE_ISA_AVX512})
        if (merge_isa_supported(isa)) isas.Set(isas.Length(), Napi::String::New(env, merge_isa_name(isa)));
    r.Set("isas", isas);
    r.Set("best", Napi::String::New(env, merge_isa_name(merge_isa_best())));
    const merge_cpu_features & f = merge_cpu_detect();
    Napi::Object cpu = Napi::Object::New(env);
    cpu.Set("sse2", f.sse2);
    cpu.Set("avx", f.avx);
    cpu.Set("avx2", f.avx2);
    cpu.Set("f16c", f.f16c);
    cpu.Set("fma", f.fma);
    cpu.Set("avx512f", f.avx512f);
    cpu.Set("avx512bw", f.avx512bw);
    cpu.Set("avx512vl", f.avx512vl);
    cpu.Set("avx512dq", f.avx512dq);
    cpu.Set("osYmm", f.os_ymm);
    cpu.Set("osZmm", f.os_zmm);
    r.Set("cpu", cpu);
    Napi::Array kernels = Napi::Array::New(env, MERGE_KERNEL_COUNT);
    for (uint32_t k = 0; k < MERGE_KERNEL_COUNT; k++) kernels.Set(k, Napi::String::New(env, merge_kernel_name(k)));
    r.Set("kernels", kernels);
    Napi::Array dtypes = Napi::Array::New(env, ST_DTYPE_COUNT);
    for (uint32_t d = 0; d < ST_DTYPE_COUNT; d++) dtypes.Set(d, Napi::String::New(env, st_dtype_name(d)));
    r.Set("dtypes", dtypes);
    Napi::Array codes = Napi::Array::New(env, merge_error_count);
    for (int c = 0; c < merge_error_count; c++) codes.Set((uint32_t) c, Napi::String::New(env, merge_error_name((merge_error) c)));
    r.Set("errorCodes", codes);
    return r;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
    exports.Set("runJob", Napi::Function::New(env, run_job, "runJob"));
    exports.Set("capabilities", Napi::Function::New(env, capabilities, "capabilities"));
    exports.Set("prepareOutputBuffers", Napi::Function::New(env, prepare_output_buffers, "prepareOutputBuffers"));
    exports.Set("discardOutputBuffers", Napi::Function::New(env, discard_output_buffers, "discardOutputBuffers"));
    return exports;
}

} // namespace

NODE_API_MODULE(tensormerge, init)
