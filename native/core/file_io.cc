#include "file_io.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

constexpr uint64_t page = 4096;

int open_retry(const char * path, int flags, mode_t mode = 0) {
    int fd;
    do fd = ::open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

} // namespace

uint8_t * merge_alloc_io_buffer(uint64_t size) {
    constexpr uint64_t huge = 2u << 20;
    const uint64_t rounded = (size + huge - 1) & ~(huge - 1);
    void * p = nullptr;
    if (posix_memalign(&p, huge, (size_t) rounded) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
    madvise(p, (size_t) rounded, MADV_HUGEPAGE); // advice only
#endif
    return (uint8_t *) p;
}

merge_status merge_input_map::open(const std::string & path, uint64_t expected_size, bool sequential) {
    close();
    fd_ = open_retry(path.c_str(), O_RDONLY);
    if (fd_ < 0) return merge_status_from_errno(errno, path, "opening an input");
    struct stat st;
    if (fstat(fd_, &st) != 0) return merge_status_from_errno(errno, path, "fstat of an input");
    if (!S_ISREG(st.st_mode)) return merge_status::fail(merge_error::IO_ERROR, path + ": not a regular file", path);
    if ((uint64_t) st.st_size != expected_size)
        return merge_status::fail(merge_error::SIZE_MISMATCH, path + ": file is " + std::to_string((uint64_t) st.st_size) +
                " bytes, the job expects " + std::to_string(expected_size) + " (changed since it was read?)", path);
    size_ = expected_size;
    mtime_ = st.st_mtim;
    if (size_ == 0) return {};
    if (size_ > (uint64_t) SIZE_MAX) return merge_status::fail(merge_error::IO_ERROR, path + ": too large to map", path);
    void * p = mmap(nullptr, (size_t) size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) return merge_status_from_errno(errno, path, "mapping an input");
    data_ = (const uint8_t *) p;
    if (sequential) madvise(p, (size_t) size_, MADV_SEQUENTIAL);
    return {};
}

void merge_input_map::close() {
    if (data_) munmap((void *) data_, (size_t) size_);
    if (fd_ >= 0) ::close(fd_);
    if (fd_direct_ >= 0) ::close(fd_direct_);
    data_ = nullptr;
    fd_ = fd_direct_ = -1;
    direct_refused_.store(false, std::memory_order_relaxed);
    test_refuse_direct_ = false;
    size_ = 0;
}

int merge_input_map::advise(uint64_t offset, uint64_t length, int advice) const {
    if (!data_ || length == 0 || offset >= size_) return 0;
    uint64_t end = offset + length < offset || offset + length > size_ ? size_ : offset + length;
    const uint64_t begin = offset & ~(page - 1);
    end = (end + page - 1) & ~(page - 1); // the map's last page may extend past size_: still ours
    return madvise((void *) (data_ + begin), (size_t) (end - begin), advice);
}

void merge_input_map::drop_cached(uint64_t offset, uint64_t length) const {
    if (fd_ < 0 || length == 0 || offset >= size_) return;
    if (offset + length < offset || offset + length > size_) length = size_ - offset;
#ifdef POSIX_FADV_DONTNEED
    posix_fadvise(fd_, (off_t) offset, (off_t) length, POSIX_FADV_DONTNEED);
#endif
}

double merge_input_map::resident_fraction(uint64_t offset, uint64_t length) const {
    if (!data_ || length == 0 || offset >= size_) return 1.0;
    uint64_t end = offset + length < offset || offset + length > size_ ? size_ : offset + length;
    const uint64_t begin = offset & ~(page - 1);
    end = (end + page - 1) & ~(page - 1);
    std::vector<unsigned char> vec((size_t) ((end - begin) / page));
    if (mincore((void *) (data_ + begin), (size_t) (end - begin), vec.data()) != 0) return 1.0;
    size_t resident = 0;
    for (unsigned char v : vec) resident += v & 1;
    return (double) resident / (double) vec.size();
}

double merge_input_map::sampled_resident_fraction() const {
    constexpr uint64_t samples = 256, sample = 64u << 10;
    if (size_ <= samples * sample) return resident_fraction(0, size_);
    double sum = 0;
    for (uint64_t k = 0; k < samples; k++) sum += resident_fraction((size_ - sample) / (samples - 1) * k, sample);
    return sum / (double) samples;
}

std::vector<unsigned char> merge_input_map::resident_pages() const {
    if (!data_) return {};
    std::vector<unsigned char> vec((size_t) (mapped_length() / page));
    if (mincore((void *) data_, (size_t) mapped_length(), vec.data()) != 0) return {};
    for (unsigned char & v : vec) v &= 1;
    return vec;
}

merge_status merge_input_map::read_failed(const std::string & path, uint64_t offset, uint64_t length, int err) const {
    merge_status changed = check_unchanged(path);
    if (!changed.ok()) return changed;
    return merge_status::fail(merge_error::IO_ERROR, path + ": reading bytes " + std::to_string(offset) + "-" + std::to_string(offset + length) +
            " of the file failed (" + std::strerror(err) + "); nothing was saved", path);
}

merge_status merge_input_map::read_at(const std::string & path, uint64_t offset, uint64_t length, uint8_t * dst) const {
    if (fd_ < 0 || offset > size_ || length > size_ - offset)
        return merge_status::fail(merge_error::INTERNAL, path + ": a read past the end of the input was asked for", path);
    while (length > 0) {
        const size_t n = length > (1u << 30) ? (1u << 30) : (size_t) length;
        const ssize_t r = pread(fd_, dst, n, (off_t) offset);
        if (r < 0) {
            if (errno == EINTR) continue;
            return read_failed(path, offset, length, errno);
        }
        if (r == 0) return fault_status(path, offset); // end of file before the planned size: truncated or changed
        dst += r;
        offset += (uint64_t) r;
        length -= (uint64_t) r;
    }
    return {};
}

bool merge_input_map::open_direct() {
#ifdef O_DIRECT
    if (fd_ < 0 || fd_direct_ >= 0) return fd_direct_ >= 0;
#ifdef STATX_DIOALIGN
    // Where the kernel reports it (6.1+): 0 means no direct I/O for this file, and an alignment
    // coarser than 4096 does not fit the reader, whose offsets, lengths and buffers are aligned
    // to 4096 (which covers the usual 512 and 4096). Elsewhere the first read tells (EINVAL).
    struct statx stx;
    if (statx(fd_, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN))
        if (stx.stx_dio_offset_align == 0 || stx.stx_dio_offset_align > page || stx.stx_dio_mem_align > page) return false;
#endif
    const std::string self = "/proc/self/fd/" + std::to_string(fd_);
    // Reopen the same file (not the path: it may have been replaced since), read-only and direct.
    fd_direct_ = open_retry(self.c_str(), O_RDONLY | O_DIRECT);
    return fd_direct_ >= 0;
#else
    return false;
#endif
}

merge_status merge_input_map::read_direct_at(const std::string & path, uint64_t offset, uint64_t length, uint8_t * dst, bool * direct) const {
    *direct = false;
    if (fd_ < 0 || offset > size_ || length > size_ - offset)
        return merge_status::fail(merge_error::INTERNAL, path + ": a read past the end of the input was asked for", path);
    if (!reads_direct() || (offset & (page - 1)) != 0 || ((uintptr_t) dst & (page - 1)) != 0) return read_at(path, offset, length, dst);
    const uint64_t end = offset + length;
    while (offset < end) {
        // Whole blocks: the last one may pass the end of the file, where the read stops short.
        const uint64_t want = ((end - offset) + page - 1) & ~(page - 1);
        const size_t n = want > (1u << 30) ? (1u << 30) : (size_t) want;
        ssize_t r;
        if (test_refuse_direct_) {
            errno = EINVAL;
            r = -1;
        } else {
            r = pread(fd_direct_, dst, n, (off_t) offset);
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EINVAL) {
                direct_refused_.store(true, std::memory_order_relaxed);
                return read_at(path, offset, end - offset, dst); // the rest (all of it, on a first read) buffered
            }
            return read_failed(path, offset, end - offset, errno);
        }
        if (r == 0) return fault_status(path, offset); // end of file before the planned size: truncated or changed
        dst += r;
        offset += (uint64_t) r;
        // A short read that is not whole blocks ended at the end of the file: the next direct read
        // would be unaligned, and the file is shorter than planned if bytes are still missing.
        if (offset < end && ((uint64_t) r & (page - 1)) != 0) return fault_status(path, offset);
    }
    *direct = true;
    return {};
}

void merge_input_map::advise_sequential() const {
#ifdef POSIX_FADV_SEQUENTIAL
    if (fd_ >= 0) posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
}

merge_status merge_input_map::check_unchanged(const std::string & path) const {
    if (fd_ < 0) return {};
    struct stat st;
    if (fstat(fd_, &st) != 0) return merge_status_from_errno(errno, path, "fstat of an input");
    const bool same_mtime = st.st_mtim.tv_sec == mtime_.tv_sec && st.st_mtim.tv_nsec == mtime_.tv_nsec;
    if ((uint64_t) st.st_size == size_ && same_mtime) return {};
    std::string what = (uint64_t) st.st_size != size_
            ? "its size went from " + std::to_string(size_) + " to " + std::to_string((uint64_t) st.st_size) + " bytes"
            : "it was rewritten in place: same size, new modification time";
    return merge_status::fail(merge_error::INPUT_CHANGED, path + ": the file changed during the merge (" + what +
            "); the merged bytes and the recipe's hash of this input would not match, so nothing was saved", path);
}

merge_status merge_input_map::fault_status(const std::string & path, uint64_t offset) const {
    struct stat st;
    if (fd_ >= 0 && fstat(fd_, &st) == 0 && (uint64_t) st.st_size <= offset)
        return merge_status::fail(merge_error::FILE_TRUNCATED, path + ": the file was truncated during the merge (it is now " +
                std::to_string((uint64_t) st.st_size) + " bytes, was " + std::to_string(size_) + "; byte " + std::to_string(offset) +
                " is gone); nothing was saved", path);
    merge_status changed = check_unchanged(path);
    if (!changed.ok()) return changed;
    return merge_status::fail(merge_error::IO_ERROR, path + ": reading byte " + std::to_string(offset) +
            " of the file failed (I/O error on a mapped read); nothing was saved", path);
}

merge_status merge_output_file::create(const std::string & path, uint64_t size, bool direct) {
    path_ = path;
    fd_ = open_retry(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd_ < 0) return merge_status_from_errno(errno, path, "creating an output");
    created_ = true;
#ifdef __linux__
    // Reserve the space now so a full disk fails before the merge rather than at the end.
    if (size > 0 && fallocate(fd_, 0, 0, (off_t) size) != 0) {
        const int err = errno;
        if (err == ENOSPC || err == EDQUOT) return merge_status_from_errno(err, path, "reserving space for an output");
        // EOPNOTSUPP and friends: the filesystem does not preallocate; writes will tell.
    }
#endif
#ifdef O_DIRECT
    if (direct) fd_direct_ = open_retry(path.c_str(), O_WRONLY | O_DIRECT);
#else
    (void) direct;
#endif
    return {};
}

merge_status merge_output_file::write_fd(int fd, const uint8_t * buf, uint64_t offset, uint64_t length) {
    while (length > 0) {
        const size_t n = length > (1u << 30) ? (1u << 30) : (size_t) length;
        const ssize_t w = pwrite(fd, buf, n, (off_t) offset);
        if (w < 0) {
            if (errno == EINTR) continue;
            return merge_status_from_errno(errno, path_, "writing an output");
        }
        if (w == 0) return merge_status::fail(merge_error::IO_ERROR, path_ + ": write returned 0", path_);
        buf += w;
        offset += (uint64_t) w;
        length -= (uint64_t) w;
    }
    return {};
}

merge_status merge_output_file::write(const uint8_t * buf, uint64_t offset, uint64_t length) {
    if (fd_direct_ >= 0 && (offset & (page - 1)) == 0 && ((uintptr_t) buf & (page - 1)) == 0) {
        const uint64_t aligned = length & ~(page - 1);
        if (aligned > 0) {
            merge_status s = write_fd(fd_direct_, buf, offset, aligned);
            if (s.ok()) {
                direct_bytes_ += aligned;
                buf += aligned;
                offset += aligned;
                length -= aligned;
            } else if (s.code == merge_error::IO_ERROR) {
                // EINVAL from a filesystem that opened O_DIRECT but will not do it: go buffered.
                ::close(fd_direct_);
                fd_direct_ = -1;
            } else {
                return s;
            }
        }
    }
    return write_fd(fd_, buf, offset, length);
}

merge_status merge_output_file::finish(bool sync) {
    if (fd_direct_ >= 0) {
        ::close(fd_direct_);
        fd_direct_ = -1;
    }
    if (sync && fsync(fd_) != 0) return merge_status_from_errno(errno, path_, "fsync of an output");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return merge_status_from_errno(errno, path_, "closing an output");
    return {};
}

void merge_output_file::discard() {
    if (fd_direct_ >= 0) ::close(fd_direct_);
    if (fd_ >= 0) ::close(fd_);
    fd_direct_ = fd_ = -1;
    if (created_ && !keep_) unlink(path_.c_str());
    created_ = false;
}
