// Gathering narrow column cuts from a source mapping. A column cut of a
// row-major tensor (o_proj, down_proj at high TP) is thousands of rows of a
// few hundred bytes; a pread per row costs a system call each, a copy from a
// mapping costs nothing but the bytes. The one hazard of a mapping, SIGBUS
// when the file shrinks under it, is caught here and turned into an error.
#define _GNU_SOURCE
#include "shardfs_gather.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <errno.h>
#include <unistd.h>

// volatile: to the optimiser memcpy cannot read this variable, so without it
// the store before the copy loop is dead (overwritten by the NULL after it)
// and -O2 drops it: release builds then had no guard at all, and a SIGBUS in
// a gather (a truncated source, or an I/O error on a mapped page) killed the
// daemon.
static __thread sigjmp_buf *volatile gather_escape;
static struct sigaction previous_sigbus;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int signal, siginfo_t *info, void *context) {
    if (gather_escape) siglongjmp(*gather_escape, 1);
    // Not ours: behave as before we were installed.
    sigaction(SIGBUS, &previous_sigbus, NULL);
    raise(signal);
    (void)info;
    (void)context;
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &previous_sigbus);
}

static inline void copy_element(unsigned char *out, const unsigned char *in, size_t size) {
    switch (size) {
    case 2: memcpy(out, in, 2); break;
    case 4: memcpy(out, in, 4); break;
    case 8: memcpy(out, in, 8); break;
    default: memcpy(out, in, size);
    }
}

int shardfs_gather_strided(void *dst, size_t dst_row_stride, const void *src, size_t src_row_stride,
                           size_t src_element_stride, size_t element_size, size_t elements, size_t rows) {
    pthread_once(&install_once, install);
    sigjmp_buf escape;
    // The mask is not saved (0): the handler runs with SA_NODEFER and an
    // empty sa_mask, so it blocks nothing a jump back would need to undo,
    // and saving it cost an rt_sigprocmask per gather (1.5 per request).
    if (sigsetjmp(escape, 0) != 0) {
        gather_escape = NULL;
        return -1;
    }
    gather_escape = &escape;
    unsigned char *out = dst;
    const unsigned char *in = src;
    if (src_element_stride == element_size) {
        for (size_t row = 0; row < rows; row++)
            memcpy(out + row * dst_row_stride, in + row * src_row_stride, elements * element_size);
    } else if (src_row_stride < src_element_stride) {
        // Column-major: walk the source in its own order (down a column),
        // so each of its cache lines is read once.
        for (size_t e = 0; e < elements; e++)
            for (size_t row = 0; row < rows; row++)
                copy_element(out + row * dst_row_stride + e * element_size, in + e * src_element_stride + row * src_row_stride,
                             element_size);
    } else {
        for (size_t row = 0; row < rows; row++)
            for (size_t e = 0; e < elements; e++)
                copy_element(out + row * dst_row_stride + e * element_size, in + row * src_row_stride + e * src_element_stride,
                             element_size);
    }
    gather_escape = NULL;
    return 0;
}

int shardfs_gather_rows(void *dst, const void *src, size_t row_bytes, size_t stride, size_t rows) {
    // A row is one element of row_bytes bytes: the strided gather's memcpy path.
    return shardfs_gather_strided(dst, row_bytes, src, stride, row_bytes, row_bytes, 1, rows);
}

void shardfs_release_mapped(const void *start, size_t length) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t first = (size_t)start & ~(page - 1);
    size_t last = ((size_t)start + length + page - 1) & ~(page - 1);
    madvise((void *)first, last - first, MADV_DONTNEED);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

// cachestat(2), Linux 6.5: how many pages of a range are in the page cache.
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct shardfs_cachestat_range { unsigned long long off, len; };
struct shardfs_cachestat { unsigned long long nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted; };

static int all_cached(int fd, size_t first, size_t last) {
    struct shardfs_cachestat_range range = { first, last - first };
    struct shardfs_cachestat stat;
    if (syscall(__NR_cachestat, fd, &range, &stat, 0) != 0) return 0;  // older kernel: populate
    return stat.nr_cache * (size_t)sysconf(_SC_PAGESIZE) >= last - first;
}

int shardfs_populate(int fd, const void *base, size_t mapping_size, size_t offset, size_t length) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t first = (offset) & ~(page - 1);
    size_t last = (offset + length + page - 1) & ~(page - 1);
    // Populating cached pages only maps and unmaps them (and makes the other
    // CPUs flush their TLBs): the cost without the gain.
    if (all_cached(fd, first, last)) return 0;
    // 2 MiB at a time, released before the next: each of the many threads
    // that populate keeps at most that much mapped (it counts as RSS).
    const size_t step = 2u << 20;
    // The kernel maps pages around a fault (fault-around, whole large
    // folios) beyond the range asked for: the release covers the 2 MiB
    // blocks the range touches, within the mapping. Releasing only the
    // range left up to 1.6 MB mapped per source file of a 70B mount.
    size_t mapped_end = (mapping_size + page - 1) & ~(page - 1);
    int status = 0;
    for (size_t at = first; at < last; at += step) {
        size_t length = last - at < step ? last - at : step;
        void *start = (char *)base + at;
        if (madvise(start, length, MADV_POPULATE_READ) != 0 && status == 0) status = errno;
        size_t zap_start = at & ~(step - 1);
        size_t zap_end = (at + length + step - 1) & ~(step - 1);
        if (zap_end > mapped_end) zap_end = mapped_end;
        madvise((char *)base + zap_start, zap_end - zap_start, MADV_DONTNEED);
        if (status == EINVAL) break;
    }
    return status;
}
