// File access for the engine: read-only maps of the inputs, exclusive creation and positioned
// writes of the outputs. POSIX only. Objects are owned by one engine run; the map is read by
// every pool thread (reads and madvise only), an output is written by the writer thread only.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <ctime>
#include <vector>

#include "errors.h"

/**
 * A buffer for window-sized I/O: 2 MiB aligned and, where the kernel allows (transparent huge
 * pages "madvise" or "always"), backed by huge pages. With 4 KiB pages, a copy into a 32 MiB
 * buffer misses the TLB on every page, and in a VM each miss is a two-level page walk: that
 * made read() into the engine's buffers cost 4-5x the CPU of the floor's 8 MiB buffer.
 * Returns null if out of memory; release with free().
 */
uint8_t * merge_alloc_io_buffer(uint64_t size);

/** A whole input file mapped PROT_READ, after checking that fstat() matches the job's size. */
class merge_input_map {
public:
    merge_input_map() = default;
    ~merge_input_map() { close(); }
    merge_input_map(const merge_input_map &) = delete;
    merge_input_map & operator=(const merge_input_map &) = delete;

    /**
     * FILE_NOT_FOUND / IO_ERROR on open, SIZE_MISMATCH if the file changed since planning.
     * `sequential`: MADV_SEQUENTIAL on the map. On Linux 6.x that advice makes a fault's
     * read-ahead fill the page cache with 4 KiB folios whenever the faulting range does not start
     * on a 2 MiB boundary (a tensor's), each then mapped by its own PTE: 0.44 s of system CPU
     * per GB read cold, against 0.07 s with the default advice, whose read-ahead makes large
     * folios that the kernel maps 2 MiB at a time (MADV_POPULATE_READ of 4 MiB steps from an
     * unaligned offset of a 1 GB ext4 file; bench/RESULTS.md "Statistics read").
     */
    merge_status open(const std::string & path, uint64_t expected_size, bool sequential = true);
    void close();

    const uint8_t * data() const { return data_; }
    uint64_t size() const { return size_; }

    /** madvise() over [offset, offset+length), rounded out to pages and clamped to the map: its result (errno set), 0 if nothing to do. */
    int advise(uint64_t offset, uint64_t length, int advice) const;

    /**
     * Drops the whole pages inside [offset, offset+length) from the page cache
     * (POSIX_FADV_DONTNEED; pages still mapped anywhere, or only partly inside, stay). Unmap
     * them first (advise MADV_DONTNEED). Advice only: errors are ignored.
     */
    void drop_cached(uint64_t offset, uint64_t length) const;

    /** Fraction of the pages of [offset, offset+length) in the page cache (mincore); 1 if unknown. */
    double resident_fraction(uint64_t offset, uint64_t length) const;

    /** resident_fraction of the whole file, estimated from 256 evenly spaced 64 KiB samples (cheap). */
    double sampled_resident_fraction() const;

    /** Per page of the whole file, 1 if it is in the page cache (mincore); empty if unknown. */
    std::vector<unsigned char> resident_pages() const;

    /**
     * Copies [offset, offset+length) of the file into dst with pread() (retries EINTR and short
     * reads). A read that ends early gives FILE_TRUNCATED / INPUT_CHANGED as fault_status does;
     * a failed read IO_ERROR, naming the file and the bytes.
     */
    merge_status read_at(const std::string & path, uint64_t offset, uint64_t length, uint8_t * dst) const;

    /**
     * Opens a second, O_DIRECT descriptor of the same file for read_direct_at. False (reads stay
     * buffered) if the filesystem refuses O_DIRECT, or if statx STATX_DIOALIGN (where the kernel
     * reports it) says the file takes no direct I/O or needs an offset or memory alignment
     * coarser than 4096: the reader aligns offsets, lengths and buffers to 4096 only (its slots
     * keep each run's bytes at their file offset modulo 4096). Call before the reads start.
     */
    bool open_direct();

    /** open_direct succeeded and no direct read has been refused since. Thread-safe. */
    bool reads_direct() const { return fd_direct_ >= 0 && !direct_refused_.load(std::memory_order_relaxed); }

    /**
     * Copies [offset, offset+length) of the file into dst through the O_DIRECT descriptor
     * (the page cache is bypassed; Linux writes dirty cached pages back first, so the bytes
     * are the file's current ones). `offset` and `dst` must be 4096-aligned; up to `length`
     * rounded up to 4096 bytes of dst are written (the device reads whole blocks). If a read
     * is refused with EINVAL (a filesystem that opened O_DIRECT but will not do it), the file
     * turns buffered for good (reads_direct() false) and this read is done by read_at:
     * *direct says which way it went. Errors as read_at. Thread-safe.
     */
    merge_status read_direct_at(const std::string & path, uint64_t offset, uint64_t length, uint8_t * dst, bool * direct) const;

    /**
     * Tests only: the next direct read fails with EINVAL, as on a filesystem that opens O_DIRECT
     * but refuses the reads (Linux 6.6+ tmpfs accepts them, so the fallback needs a stand-in).
     */
    void refuse_direct_reads_for_tests() { test_refuse_direct_ = true; }

    /** POSIX_FADV_SEQUENTIAL on the whole file (a larger kernel readahead for read()). Advice only. */
    void advise_sequential() const;

    /** The mapped bytes, rounded up to whole pages (a fault anywhere in it is about this file). */
    uint64_t mapped_length() const { return (size_ + 4095) & ~(uint64_t) 4095; }

    /**
     * INPUT_CHANGED if the file's size or mtime (fstat of the open descriptor) differs from
     * when it was opened: the bytes read may be a mix of two versions.
     */
    merge_status check_unchanged(const std::string & path) const;

    /**
     * The error for a SIGBUS at `offset` of the map: FILE_TRUNCATED if the file is now shorter
     * than that, INPUT_CHANGED if it otherwise changed, else IO_ERROR (the read failed).
     */
    merge_status fault_status(const std::string & path, uint64_t offset) const;

private:
    merge_status read_failed(const std::string & path, uint64_t offset, uint64_t length, int err) const;

    int fd_ = -1;
    int fd_direct_ = -1; // O_DIRECT twin of fd_ (open_direct), or -1
    mutable std::atomic<bool> direct_refused_{false}; // a direct read got EINVAL: read buffered from then on
    bool test_refuse_direct_ = false;
    const uint8_t * data_ = nullptr;
    uint64_t size_ = 0;
    struct timespec mtime_ = {};
};

/**
 * An output created with O_WRONLY|O_CREAT|O_EXCL, 0644. With `direct`, a second descriptor
 * opened with O_DIRECT takes the 4096-aligned full blocks (buffers must be 4096-aligned);
 * if O_DIRECT is refused (tmpfs...) everything goes through the buffered descriptor.
 * Unless keep() was called, the destructor (or discard()) closes and unlinks the file: a failed
 * job leaves none of its outputs behind, even those already finished.
 */
class merge_output_file {
public:
    merge_output_file() = default;
    ~merge_output_file() { discard(); }
    merge_output_file(const merge_output_file &) = delete;
    merge_output_file & operator=(const merge_output_file &) = delete;

    /** OUTPUT_EXISTS if the path exists; DISK_FULL if space for `size` cannot be reserved. */
    merge_status create(const std::string & path, uint64_t size, bool direct);

    /** Writes all of [buf, buf+length) at `offset`; retries short writes and EINTR. */
    merge_status write(const uint8_t * buf, uint64_t offset, uint64_t length);

    /** fsync (optional) and close. */
    merge_status finish(bool sync);

    /** The job succeeded: leave the file in place. */
    void keep() { keep_ = true; }

    /** Closes, and unlinks the file if it was created and not kept. Idempotent. */
    void discard();

    bool direct() const { return fd_direct_ >= 0; }
    /** Bytes that went through O_DIRECT. */
    uint64_t direct_bytes() const { return direct_bytes_; }
    const std::string & path() const { return path_; }

private:
    merge_status write_fd(int fd, const uint8_t * buf, uint64_t offset, uint64_t length);

    int fd_ = -1;
    int fd_direct_ = -1;
    std::string path_;
    bool created_ = false;
    bool keep_ = false;
    uint64_t direct_bytes_ = 0;
};
