// latencyfs: a read-only passthrough FUSE file system that delays every read
// request by a fixed time, to play slower, higher-latency storage (FSx for
// Lustre, NFS) on a machine with a local disk. bench/cold_bench.py compiles
// it with cc (libfuse3-dev, as ShardFS itself needs) and puts the source
// checkpoint and the converted rank files behind it with --latency-us.
//
//   LATENCYFS_SOURCE=DIR [LATENCYFS_DELAY_US=1000] latencyfs MNT -f -o ro [-o ...]
//
// Every FUSE read request sleeps LATENCYFS_DELAY_US microseconds (default
// 1000), then preads from DIR; all else (getattr, readdir, open) passes
// through undelayed. Requests are served by libfuse's multithreaded loop, so
// concurrent requests overlap their delays (`-o max_threads=N`, default 10;
// the kernel keeps at most 12 readahead requests in flight unless told
// otherwise). The kernel page cache is used as for any file, so mmap works;
// buffered reads and page faults reach the file system as readahead-sized
// requests (128 KiB by default), each paying the delay once.
//
// Symbolic links in DIR are followed (getattr uses stat, not lstat), so a
// Hugging Face cache snapshot of links into blobs/ reads as plain files.
//
// The virtual file MNT/.latencyfs-stats (not listed by readdir) reads as one
// line: "reads N bytes B delay_us D" - the read requests served since the
// mount and their bytes, so a benchmark can count what paid the delay.
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATS_NAME "/.latencyfs-stats"
#define STATS_FH UINT64_MAX

static const char *source;
static long delay_us = 1000;
static uint64_t stat_reads, stat_bytes;

static void real_path(char *out, const char *path) {
    snprintf(out, PATH_MAX, "%s%s", source, path);
}

static void delay(void) {
    if (delay_us <= 0) return;
    struct timespec ts = { .tv_sec = delay_us / 1000000, .tv_nsec = (delay_us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int l_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    if (strcmp(path, STATS_NAME) == 0) {
        memset(st, 0, sizeof *st);
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = 4096;  // served with direct_io: the real length is what read returns
        return 0;
    }
    char p[PATH_MAX];
    real_path(p, path);
    if (stat(p, st) != 0) return -errno;
    st->st_mode &= ~0222;
    return 0;
}

static int l_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
                     struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
    (void)offset; (void)fi; (void)flags;
    char p[PATH_MAX];
    real_path(p, path);
    DIR *d = opendir(p);
    if (!d) return -errno;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) fill(buf, e->d_name, NULL, 0, 0);
    closedir(d);
    return 0;
}

static int l_open(const char *path, struct fuse_file_info *fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    if (strcmp(path, STATS_NAME) == 0) {
        fi->fh = STATS_FH;
        fi->direct_io = 1;
        return 0;
    }
    char p[PATH_MAX];
    real_path(p, path);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int l_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)path;
    if (fi->fh == STATS_FH) {
        char line[128];
        int n = snprintf(line, sizeof line, "reads %llu bytes %llu delay_us %ld\n",
                         (unsigned long long)__atomic_load_n(&stat_reads, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&stat_bytes, __ATOMIC_RELAXED), delay_us);
        if (offset >= n) return 0;
        size_t len = (size_t)(n - offset) < size ? (size_t)(n - offset) : size;
        memcpy(buf, line + offset, len);
        return (int)len;
    }
    delay();
    ssize_t n = pread((int)fi->fh, buf, size, offset);
    if (n < 0) return -errno;
    __atomic_add_fetch(&stat_reads, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&stat_bytes, (uint64_t)n, __ATOMIC_RELAXED);
    return (int)n;
}

static int l_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    if (fi->fh != STATS_FH) close((int)fi->fh);
    return 0;
}

static const struct fuse_operations ops = {
    .getattr = l_getattr,
    .readdir = l_readdir,
    .open = l_open,
    .read = l_read,
    .release = l_release,
};

int main(int argc, char *argv[]) {
    source = getenv("LATENCYFS_SOURCE");
    if (!source || !*source) {
        fprintf(stderr, "latencyfs: set LATENCYFS_SOURCE to the directory to serve\n");
        return 2;
    }
    const char *d = getenv("LATENCYFS_DELAY_US");
    if (d && *d) {
        char *end;
        delay_us = strtol(d, &end, 10);
        if (*end || delay_us < 0) {
            fprintf(stderr, "latencyfs: LATENCYFS_DELAY_US must be a number of microseconds >= 0, not '%s'\n", d);
            return 2;
        }
    }
    return fuse_main(argc, argv, &ops, NULL);
}
