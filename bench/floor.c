/*
 * The I/O floor of a merge, and page-cache control for the benchmarks. Built by bench/floor.ts
 * with the system C compiler (cc -O3 -march=native -pthread); dev tool, not part of the addon.
 *
 *   floor run --out PATH --out-bytes N [--read mmap|read|direct] [--write direct|buffered]
 *             [--readers K] [--ahead N] [--drop-behind] [--writers W] [--chunk-mib M] [--no-fsync] INPUT...
 *       Reads every byte of the inputs (interleaved chunk by chunk, as a merge reads A, B, C)
 *       on K threads while one thread writes N bytes to a new file PATH (fallocate'd, like the
 *       engine's outputs), then fsyncs and unlinks it. No arithmetic. Prints one JSON object.
 *   floor warm FILE...      read the files into the page cache
 *   floor evict FILE...     drop the files' pages from the page cache (fdatasync + DONTNEED)
 *   floor resident FILE...  fraction of each file's pages in the page cache (mincore)
 *
 * "mmap" maps each input and loads every 8-byte word (a reduction the compiler vectorises, so
 * each cache line really crosses the memory bus); "read" preads into a 4096-aligned buffer
 * (the kernel's copy reads the bytes); "direct" preads with O_DIRECT (no page cache: on a VM
 * whose free memory goes back to the host, every fresh page-cache page costs a host fault). --ahead N asks for the chunk N places ahead with
 * POSIX_FADV_WILLNEED (asynchronous readahead: more requests in flight on a cold cache);
 * --drop-behind drops each chunk from the page cache once read (POSIX_FADV_DONTNEED). "direct" writes 4096-aligned chunks with O_DIRECT (the
 * unaligned tail through the page cache); "buffered" uses plain pwrite.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char * what, const char * path) {
    fprintf(stderr, "floor: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

/* Buffers of 2 MiB or more are 2 MiB aligned on transparent huge pages, as the engine's are
 * (native/core/file_io.h merge_alloc_io_buffer): on a VM, copying into 4 KiB pages misses the
 * TLB on every page, and a floor slower than the engine would not be a floor. */
static void * aligned_alloc_or_die(size_t size) {
    void * p = NULL;
    const size_t huge = 2u << 20;
    if (size >= huge) {
        const size_t rounded = (size + huge - 1) & ~(huge - 1);
        if (posix_memalign(&p, huge, rounded) != 0) die("posix_memalign", NULL);
#ifdef MADV_HUGEPAGE
        madvise(p, rounded, MADV_HUGEPAGE);
#endif
        return p;
    }
    if (posix_memalign(&p, PAGE, size) != 0) die("posix_memalign", NULL);
    return p;
}

/* ---- inputs ---- */

struct input {
    const char * path;
    int fd;
    int dfd; /* O_DIRECT descriptor, or -1 */
    uint64_t size;
    const uint8_t * map;
};

struct item {
    int file;
    uint64_t offset, length;
};

static struct input * inputs;
static int n_inputs;
static struct item * items;
static size_t n_items;
static atomic_size_t next_item;
static int use_mmap = 1;
static int use_odirect_read = 0; /* "direct": O_DIRECT preads into aligned buffers, bypassing the page cache */
static int drop_behind = 0; /* POSIX_FADV_DONTNEED each chunk once read (the page cache stays small) */
static size_t ahead = 0; /* items to POSIX_FADV_WILLNEED ahead of the one being read (0: rely on the kernel's readahead) */
static uint64_t chunk = 8ull << 20;
static atomic_uint_fast64_t sink;
static double t_read_end;
static pthread_mutex_t read_end_mutex = PTHREAD_MUTEX_INITIALIZER;

static void advise_item(size_t k) {
    if (k >= n_items) return;
    const struct item * it = &items[k];
    posix_fadvise(inputs[it->file].fd, (off_t) it->offset, (off_t) it->length, POSIX_FADV_WILLNEED);
}

static uint64_t reduce(const uint8_t * p, uint64_t n) {
    const uint64_t * w = (const uint64_t *) p; /* maps are page aligned, chunks are multiples of 8 */
    uint64_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    uint64_t i = 0, words = n / 8;
    for (; i + 4 <= words; i += 4) {
        acc0 ^= w[i];
        acc1 ^= w[i + 1];
        acc2 ^= w[i + 2];
        acc3 ^= w[i + 3];
    }
    for (; i < words; i++) acc0 ^= w[i];
    for (uint64_t b = words * 8; b < n; b++) acc1 ^= p[b];
    return acc0 ^ acc1 ^ acc2 ^ acc3;
}

static void * reader(void * arg) {
    (void) arg;
    uint8_t * buf = use_mmap ? NULL : aligned_alloc_or_die(chunk + PAGE);
    uint64_t acc = 0;
    for (;;) {
        const size_t k = atomic_fetch_add(&next_item, 1);
        if (k >= n_items) break;
        if (ahead) advise_item(k + ahead);
        const struct item * it = &items[k];
        const struct input * in = &inputs[it->file];
        if (use_mmap) {
            acc ^= reduce(in->map + it->offset, it->length);
        } else {
            uint64_t done = 0;
            /* O_DIRECT: offsets are chunk multiples (4096-aligned); round the length up (the read stops at EOF). */
            const int fd = in->dfd >= 0 ? in->dfd : in->fd;
            const uint64_t want = in->dfd >= 0 ? (it->length + PAGE - 1) & ~(PAGE - 1) : it->length;
            while (done < it->length) {
                const ssize_t r = pread(fd, buf + done, want - done, (off_t) (it->offset + done));
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) die("pread", in->path);
                done += (uint64_t) r;
            }
            acc ^= buf[0];
        }
        if (drop_behind) posix_fadvise(in->fd, (off_t) it->offset, (off_t) it->length, POSIX_FADV_DONTNEED);
    }
    atomic_fetch_xor(&sink, acc);
    free(buf);
    pthread_mutex_lock(&read_end_mutex);
    const double t = now();
    if (t > t_read_end) t_read_end = t;
    pthread_mutex_unlock(&read_end_mutex);
    return NULL;
}

static void open_inputs(char ** paths, int n, int map) {
    n_inputs = n;
    inputs = calloc((size_t) n, sizeof *inputs);
    for (int i = 0; i < n; i++) {
        struct input * in = &inputs[i];
        in->path = paths[i];
        in->fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (in->fd < 0) die("open", paths[i]);
        in->dfd = use_odirect_read ? open(paths[i], O_RDONLY | O_DIRECT | O_CLOEXEC) : -1;
        if (use_odirect_read && in->dfd < 0) die("open O_DIRECT", paths[i]);
        struct stat st;
        if (fstat(in->fd, &st) != 0) die("fstat", paths[i]);
        in->size = (uint64_t) st.st_size;
        if (map && in->size > 0) {
            void * p = mmap(NULL, in->size, PROT_READ, MAP_SHARED, in->fd, 0);
            if (p == MAP_FAILED) die("mmap", paths[i]);
            madvise(p, in->size, MADV_SEQUENTIAL);
            in->map = p;
        } else {
            posix_fadvise(in->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        }
    }
}

/* Chunks of every input, round robin: A0 B0 C0 A1 B1 C1 ... */
static void plan_items(void) {
    size_t cap = 0;
    for (int i = 0; i < n_inputs; i++) cap += (size_t) ((inputs[i].size + chunk - 1) / chunk);
    items = calloc(cap ? cap : 1, sizeof *items);
    n_items = 0;
    for (uint64_t off = 0;; off += chunk) {
        int any = 0;
        for (int i = 0; i < n_inputs; i++) {
            if (off >= inputs[i].size) continue;
            any = 1;
            const uint64_t len = inputs[i].size - off < chunk ? inputs[i].size - off : chunk;
            items[n_items++] = (struct item) {i, off, len};
        }
        if (!any) break;
    }
}

/* ---- output ---- */

static const char * out_path;
static uint64_t out_bytes;
static int use_direct = 1, do_fsync = 1, direct_fallback = 0;
static double t_write_end, t_fsync;

static void write_all(int fd, const uint8_t * buf, uint64_t len, uint64_t off) {
    while (len > 0) {
        const ssize_t w = pwrite(fd, buf, len, (off_t) off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("pwrite", out_path);
        buf += w;
        off += (uint64_t) w;
        len -= (uint64_t) w;
    }
}

static int out_fd = -1, out_dfd = -1, n_writers = 1;
static atomic_uint_fast64_t next_out_chunk;

/* One writer: takes output chunks in order from a shared counter (several writers keep that
 * many requests in flight). */
static void * write_loop(void * arg) {
    (void) arg;
    uint8_t * buf = aligned_alloc_or_die(chunk);
    memset(buf, 0x3c, chunk);
    for (;;) {
        const uint64_t off = atomic_fetch_add(&next_out_chunk, 1) * chunk;
        if (off >= out_bytes) break;
        const uint64_t len = out_bytes - off < chunk ? out_bytes - off : chunk;
        const uint64_t aligned = out_dfd >= 0 ? len & ~(PAGE - 1) : 0;
        if (aligned > 0) {
            const ssize_t w = pwrite(out_dfd, buf, aligned, (off_t) off);
            if (w == (ssize_t) aligned) {
                if (aligned < len) write_all(out_fd, buf, len - aligned, off + aligned);
                continue;
            }
            if (!(w < 0 && errno == EINVAL)) die("pwrite O_DIRECT", out_path);
            direct_fallback = 1; /* the filesystem refuses O_DIRECT: this chunk goes buffered */
        }
        write_all(out_fd, buf, len, off);
    }
    free(buf);
    return NULL;
}

static void * writer(void * arg) {
    (void) arg;
    out_fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out_fd < 0) die("create", out_path);
    if (out_bytes > 0) fallocate(out_fd, 0, 0, (off_t) out_bytes);
    if (use_direct) {
        out_dfd = open(out_path, O_WRONLY | O_DIRECT | O_CLOEXEC);
        if (out_dfd < 0) direct_fallback = 1;
    }
    pthread_t extra[16];
    const int n_extra = n_writers - 1 > 16 ? 16 : n_writers - 1;
    for (int k = 0; k < n_extra; k++) if (pthread_create(&extra[k], NULL, write_loop, NULL) != 0) die("pthread_create", NULL);
    write_loop(NULL);
    for (int k = 0; k < n_extra; k++) pthread_join(extra[k], NULL);
    const double t0 = now();
    if (do_fsync && fsync(out_fd) != 0) die("fsync", out_path);
    t_fsync = now() - t0;
    if (out_dfd >= 0) close(out_dfd);
    close(out_fd);
    t_write_end = now();
    return NULL;
}

/* ---- commands ---- */

static int cmd_run(int argc, char ** argv) {
    int readers = 1, keep = 0;
    int i = 0;
    for (; i < argc; i++) {
        const char * a = argv[i];
        if (!strcmp(a, "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(a, "--out-bytes") && i + 1 < argc) out_bytes = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--read") && i + 1 < argc) {
            const char * r = argv[++i];
            use_mmap = !strcmp(r, "mmap");
            use_odirect_read = !strcmp(r, "direct");
        }
        else if (!strcmp(a, "--write") && i + 1 < argc) use_direct = !strcmp(argv[++i], "direct");
        else if (!strcmp(a, "--readers") && i + 1 < argc) readers = atoi(argv[++i]);
        else if (!strcmp(a, "--ahead") && i + 1 < argc) ahead = (size_t) atoi(argv[++i]);
        else if (!strcmp(a, "--chunk-mib") && i + 1 < argc) chunk = strtoull(argv[++i], NULL, 10) << 20;
        else if (!strcmp(a, "--no-fsync")) do_fsync = 0;
        else if (!strcmp(a, "--drop-behind")) drop_behind = 1;
        else if (!strcmp(a, "--writers") && i + 1 < argc) {
            n_writers = atoi(argv[++i]);
            if (n_writers < 1) n_writers = 1;
        }
        else if (!strcmp(a, "--keep")) keep = 1;
        else if (!strcmp(a, "--")) { i++; break; }
        else if (a[0] == '-') { fprintf(stderr, "floor: unknown option %s\n", a); return 2; }
        else break;
    }
    if (!out_path || readers < 1 || chunk == 0) { fprintf(stderr, "floor run: --out PATH --out-bytes N INPUT...\n"); return 2; }
    open_inputs(argv + i, argc - i, use_mmap);
    plan_items();
    for (size_t k = 0; k < ahead && k < n_items; k++) advise_item(k);
    pthread_t w, r[64];
    if (readers > 64) readers = 64;
    const double t0 = now();
    t_read_end = t0;
    if (pthread_create(&w, NULL, writer, NULL) != 0) die("pthread_create", NULL);
    for (int k = 0; k < readers; k++) if (pthread_create(&r[k], NULL, reader, NULL) != 0) die("pthread_create", NULL);
    for (int k = 0; k < readers; k++) pthread_join(r[k], NULL);
    pthread_join(w, NULL);
    const double t1 = now();
    uint64_t bytes_read = 0;
    for (int k = 0; k < n_inputs; k++) bytes_read += inputs[k].size;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    if (!keep) unlink(out_path);
    printf("{\"seconds\":%.6f,\"cpuSeconds\":%.6f,\"readSeconds\":%.6f,\"writeSeconds\":%.6f,\"fsyncSeconds\":%.6f,"
           "\"bytesRead\":%llu,\"bytesWritten\":%llu,\"read\":\"%s\",\"write\":\"%s\",\"readers\":%d,"
           "\"ahead\":%zu,\"dropBehind\":%s,\"writers\":%d,\"chunkBytes\":%llu,\"directFallback\":%s,\"sink\":%llu}\n",
           t1 - t0, cpu, t_read_end - t0, t_write_end - t0, t_fsync, (unsigned long long) bytes_read,
           (unsigned long long) out_bytes, use_mmap ? "mmap" : use_odirect_read ? "direct" : "read", use_direct ? "direct" : "buffered", readers, ahead, drop_behind ? "true" : "false", n_writers,
           (unsigned long long) chunk, direct_fallback ? "true" : "false", (unsigned long long) (atomic_load(&sink) & 1));
    return 0;
}

static int cmd_warm(int argc, char ** argv) {
    const double t0 = now();
    uint8_t * buf = aligned_alloc_or_die(chunk);
    uint64_t total = 0;
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", argv[i]);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        for (;;) {
            const ssize_t r = read(fd, buf, chunk);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) die("read", argv[i]);
            if (r == 0) break;
            total += (uint64_t) r;
        }
        close(fd);
    }
    printf("{\"seconds\":%.6f,\"bytes\":%llu}\n", now() - t0, (unsigned long long) total);
    return 0;
}

static int resident_of(const char * path, uint64_t * resident, uint64_t * pages) {
    *resident = *pages = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size == 0) { close(fd); return 0; }
    const uint64_t size = (uint64_t) st.st_size;
    void * p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) { close(fd); return -1; }
    const uint64_t n = (size + PAGE - 1) / PAGE;
    unsigned char * vec = malloc(n);
    if (vec && mincore(p, size, vec) == 0) {
        for (uint64_t k = 0; k < n; k++) *resident += vec[k] & 1;
        *pages = n;
    }
    free(vec);
    munmap(p, size);
    close(fd);
    return 0;
}

static int cmd_resident(int argc, char ** argv) {
    printf("{");
    for (int i = 0; i < argc; i++) {
        uint64_t r, n;
        resident_of(argv[i], &r, &n);
        printf("%s\"%s\":%.6f", i ? "," : "", argv[i], n ? (double) r / (double) n : 0.0);
    }
    printf("}\n");
    return 0;
}

static int cmd_evict(int argc, char ** argv) {
    for (int i = 0; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    return cmd_resident(argc, argv);
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor run|warm|evict|resident ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
    if (!strcmp(argv[1], "warm")) return cmd_warm(argc - 2, argv + 2);
    if (!strcmp(argv[1], "evict")) return cmd_evict(argc - 2, argv + 2);
    if (!strcmp(argv[1], "resident")) return cmd_resident(argc - 2, argv + 2);
    fprintf(stderr, "floor: unknown command %s\n", argv[1]);
    return 2;
}
