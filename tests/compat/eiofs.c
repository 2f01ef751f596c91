// eiofs: a read-only passthrough FUSE file system that returns EIO for
// chosen byte ranges of chosen files. test_faults.py compiles it with cc
// (libfuse3-dev, as ShardFS itself needs) to play a source whose disk fails:
// device-mapper's `error` target would need /dev/mapper, which containers
// and CI machines often lack, while /dev/fuse is there wherever the mount
// tests run at all.
//
//   EIOFS_SOURCE=DIR EIOFS_FAIL=name:start:end[,name:start:end...]
//     EIOFS_LOG=FILE eiofs MNT -f [-o ...]
//
// Every read of `name` that overlaps [start, end) fails with EIO (and is
// logged to EIOFS_LOG, so a test can prove the failure was really hit); all
// other reads pass through to DIR. The kernel page cache is used as for any
// file (so mmap works, and a mapped page in a failing range raises SIGBUS).
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FAIL 16

static const char *source;
static struct { char name[256]; off_t start, end; } fails[MAX_FAIL];
static int nfails;
static FILE *logf;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void real_path(char *out, const char *path) {
    snprintf(out, PATH_MAX, "%s%s", source, path);
}

static int e_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    char p[PATH_MAX];
    real_path(p, path);
    if (lstat(p, st) != 0) return -errno;
    st->st_mode &= ~0222;
    return 0;
}

static int e_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t offset,
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

static int e_open(const char *path, struct fuse_file_info *fi) {
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
    char p[PATH_MAX];
    real_path(p, path);
    int fd = open(p, O_RDONLY);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int e_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi) {
    const char *name = path[0] == '/' ? path + 1 : path;
    for (int i = 0; i < nfails; i++) {
        if (strcmp(fails[i].name, name) == 0 && offset < fails[i].end && offset + (off_t)size > fails[i].start) {
            pthread_mutex_lock(&log_lock);
            if (logf) { fprintf(logf, "EIO %s %lld %zu\n", name, (long long)offset, size); fflush(logf); }
            pthread_mutex_unlock(&log_lock);
            return -EIO;
        }
    }
    ssize_t n = pread((int)fi->fh, buf, size, offset);
    return n < 0 ? -errno : (int)n;
}

static int e_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    close((int)fi->fh);
    return 0;
}

static const struct fuse_operations ops = {
    .getattr = e_getattr,
    .readdir = e_readdir,
    .open = e_open,
    .read = e_read,
    .release = e_release,
};

int main(int argc, char *argv[]) {
    source = getenv("EIOFS_SOURCE");
    const char *spec = getenv("EIOFS_FAIL");
    const char *log_path = getenv("EIOFS_LOG");
    if (!source || !spec) {
        fprintf(stderr, "eiofs: set EIOFS_SOURCE and EIOFS_FAIL\n");
        return 2;
    }
    if (log_path) logf = fopen(log_path, "a");
    char *copy = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && nfails < MAX_FAIL; tok = strtok_r(NULL, ",", &save)) {
        long long a, b;
        char name[256];
        if (sscanf(tok, "%255[^:]:%lld:%lld", name, &a, &b) != 3) {
            fprintf(stderr, "eiofs: bad EIOFS_FAIL entry '%s' (want name:start:end)\n", tok);
            return 2;
        }
        snprintf(fails[nfails].name, sizeof fails[nfails].name, "%s", name);
        fails[nfails].start = a;
        fails[nfails].end = b;
        nfails++;
    }
    return fuse_main(argc, argv, &ops, NULL);
}
