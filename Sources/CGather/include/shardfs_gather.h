#ifndef SHARDFS_GATHER_H
#define SHARDFS_GATHER_H

#include <stddef.h>

/// Copies `rows` rows of `row_bytes` bytes, `stride` bytes apart in `src`
/// (a read-only file mapping), packed into `dst`. Returns 0, or -1 when the
/// mapping faulted (SIGBUS: the file was truncated under it); the daemon
/// then answers EIO instead of dying.
int shardfs_gather_rows(void *dst, const void *src, size_t row_bytes, size_t stride, size_t rows);

/// Copies `rows` rows of `elements` elements of `element_size` bytes into
/// `dst` (rows `dst_row_stride` bytes apart, elements packed), from `src`
/// where element j of row i is at `i * src_row_stride + j * src_element_stride`
/// (a column-major piece has a row stride of one element). Returns 0, or -1
/// on SIGBUS, as `shardfs_gather_rows`.
int shardfs_gather_strided(void *dst, size_t dst_row_stride, const void *src, size_t src_row_stride,
                           size_t src_element_stride, size_t element_size, size_t elements, size_t rows);

/// Drops the page-table entries of a mapped range (the page cache keeps the
/// data), so that touching a source through its mapping does not grow RSS.
void shardfs_release_mapped(const void *start, size_t length);

/// Reads `length` bytes at `offset` of file `fd` into the page cache through
/// its mapping `base` (of `mapping_size` bytes, advised MADV_HUGEPAGE), waiting for them, then drops
/// the page-table entries again; does nothing when they are all cached
/// already. Returns 0 or an errno (never a signal).
int shardfs_populate(int fd, const void *base, size_t mapping_size, size_t offset, size_t length);

#endif
