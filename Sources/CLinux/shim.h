#ifndef SHARDFS_CLINUX_SHIM_H
#define SHARDFS_CLINUX_SHIM_H
// Linux calls that Swift's Glibc module hides behind _GNU_SOURCE.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/eventfd.h>
#include <malloc.h>

/// Starts writeback of a file range without waiting for it.
static inline int shardfs_start_writeback(int fd, off_t offset, off_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

/// A non-blocking eventfd, to wake a thread waiting in poll.
static inline int shardfs_wake_event(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}
/// Caps glibc's malloc arenas at `count`. By default each thread that
/// allocates may get an arena of its own (up to 8 per core), and memory
/// freed in one is not reused by the others: opening a training tag parses
/// its thousands of files on every core, and with 300,000 xser tensor files
/// the process's peak RSS was 1.7x its heap (653 MB for a 318 MB heap;
/// with 2 arenas 382 MB).
static inline void shardfs_limit_malloc_arenas(int count) {
    mallopt(M_ARENA_MAX, count);
}

/* Allocations of at least `bytes` get pages of their own (mmap), given back
   when freed, whatever sizes came before: glibc's default threshold rises
   with every large block freed, after which large transient buffers are
   carved from the heap and leave it fragmented. */
static inline void shardfs_malloc_mmap_threshold(int bytes) {
    mallopt(M_MMAP_THRESHOLD, bytes);
}

/* Gives the system back every whole free page of every arena (not only the
   top of the heap): what a phase of many small transient allocations left
   free between the blocks it keeps. */
static inline void shardfs_release_free_memory(void) {
    malloc_trim(0);
}
#endif
