#ifndef SHARDFS_CFUSE_SHIM_H
#define SHARDFS_CFUSE_SHIM_H

// libfuse3's low-level API at version 3.12: the newest this machine's 3.14
// offers in which fuse_session_loop_mt takes a fuse_loop_config that Swift
// can build with fuse_loop_cfg_* (with 35 it becomes a macro Swift cannot call).
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>

// What Swift cannot reach directly: macros, variadic functions, and a
// fuse_bufvec of more than one buffer (its `buf` is a one-element array).

/// A fuse_bufvec with room for `count` buffers, zeroed; free with free().
static inline struct fuse_bufvec *shardfs_bufvec_create(size_t count) {
    size_t size = sizeof(struct fuse_bufvec) + (count > 0 ? count - 1 : 0) * sizeof(struct fuse_buf);
    struct fuse_bufvec *v = (struct fuse_bufvec *)calloc(1, size);
    if (v) v->count = count;
    return v;
}

static inline void shardfs_bufvec_set_memory(struct fuse_bufvec *v, size_t i, void *mem, size_t size) {
    v->buf[i].size = size;
    v->buf[i].flags = (enum fuse_buf_flags)0;
    v->buf[i].mem = mem;
    v->buf[i].fd = -1;
    v->buf[i].pos = 0;
}

static inline void shardfs_bufvec_set_fd(struct fuse_bufvec *v, size_t i, int fd, off_t pos, size_t size) {
    v->buf[i].size = size;
    v->buf[i].flags = (enum fuse_buf_flags)(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    v->buf[i].mem = NULL;
    v->buf[i].fd = fd;
    v->buf[i].pos = pos;
}

/// fuse_session_loop_mt under its exported name for this FUSE_USE_VERSION.
static inline int shardfs_session_loop_mt(struct fuse_session *se, struct fuse_loop_config *config) {
    return fuse_session_loop_mt(se, config);
}

#endif
