#ifndef SHARDFS_CLINUX_SHIM_H
#define SHARDFS_CLINUX_SHIM_H
// Linux calls that Swift's Glibc module hides behind _GNU_SOURCE.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/eventfd.h>

/// Starts writeback of a file range without waiting for it.
static inline int shardfs_start_writeback(int fd, off_t offset, off_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

/// A non-blocking eventfd, to wake a thread waiting in poll.
static inline int shardfs_wake_event(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}
#endif
