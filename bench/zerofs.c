// zerofs: a read-only FUSE file system whose files read as zeros, set up
// the way the shardfs daemon sets up its mount, to measure what FUSE itself
// costs on this machine: the transport's ceiling, against which a mount's
// throughput is judged. mountpoint-s3 does the same with a build flag that
// makes its daemon reply zeros; here it is a separate small program, so it
// measures libfuse 3.14 and the kernel alone, with nothing of ShardFS in it.
// bench/mount_bench.sh (section e) compiles it with
//
//   cc -O2 -o zerofs bench/zerofs.c $(pkg-config --cflags --libs fuse3)
//
// and reads the same file names and sizes through it and through a shardfs
// mount, in paired rounds: mount GB/s / zerofs GB/s is the share of the
// transport's ceiling the daemon reaches.
//
//   zerofs MANIFEST MNT [--max-read-kib N] [--threads N] [--direct-io-from BYTES]
//
// MANIFEST lists the files, one a line: "relative/path<TAB>size" (size in
// bytes; directories are made for the path's parents; blank lines and lines
// starting with # are skipped). MNT must be an empty directory. zerofs stays
// in the foreground; SIGINT or SIGTERM (or `fusermount3 -u MNT`) unmounts
// and ends it, and it prints the read requests it served to stderr.
//
// Set up as `shardfs mount` does (Sources/ShardFS/FUSE), so that the only
// difference is the work done per read:
// - libfuse's low-level API, FUSE_USE_VERSION 312, fuse_session_loop_mt with
//   clone_fd 1 and max_threads 16 (--threads);
// - -o ro,noatime,default_permissions,max_read=N with N = --max-read-kib
//   (default 512, the daemon's default), and conn->max_read = N in init:
//   they must agree, or libfuse fails INIT with EPROTO;
// - direct_io on open for files of 8 MiB and more (--direct-io-from), the
//   page cache with keep_cache below; attribute and entry timeouts of an hour;
// - splice write/move asked for in init when offered (the daemon asks; a
//   fuse_reply_buf reply never splices either way).
// Every read is answered with fuse_reply_buf from one buffer of zeros made at
// start: libfuse's writev of it to /dev/fuse is the only copy, as in the
// daemon's replies from its own buffer (fuse_reply_data with
// FUSE_BUF_NO_SPLICE: one writev as well). The buffer is real memory,
// written once at start: an untouched calloc'd or .bss buffer would be the
// kernel's shared zero page, one 4 KiB page that stays in L1 however much
// is copied from it, and would flatter the transport.
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <fuse3/fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ROOT_INO 1
#define TIMEOUT 3600.0

struct node {
    char *name;           // the last path component ("" for the root)
    fuse_ino_t parent;
    int is_dir;
    uint64_t size;
};

static struct node *nodes;  // nodes[ino - 1]; nodes[0] is the root
static size_t node_count, node_capacity;
static char *zeros;
static size_t max_read = 512 << 10;
static unsigned max_threads = 16;
static uint64_t direct_io_from = 8 << 20;
static struct fuse_session *session;
static uint64_t stat_reads, stat_bytes, stat_largest;
static struct timespec start_time;

static void die(const char *what) {
    fprintf(stderr, "zerofs: %s\n", what);
    exit(2);
}

static fuse_ino_t add_node(const char *name, size_t len, fuse_ino_t parent, int is_dir, uint64_t size) {
    if (node_count == node_capacity) {
        node_capacity = node_capacity ? node_capacity * 2 : 64;
        nodes = realloc(nodes, node_capacity * sizeof *nodes);
        if (!nodes) die("out of memory");
    }
    struct node *n = &nodes[node_count++];
    n->name = strndup(name, len);
    if (!n->name) die("out of memory");
    n->parent = parent;
    n->is_dir = is_dir;
    n->size = size;
    return node_count;
}

// The child of `parent` named name[0..len), or 0. A linear scan: lookups
// happen once per name (an hour's entry timeout), and manifests are small.
static fuse_ino_t find_child(fuse_ino_t parent, const char *name, size_t len) {
    for (size_t i = 1; i < node_count; i++)
        if (nodes[i].parent == parent && strlen(nodes[i].name) == len && memcmp(nodes[i].name, name, len) == 0)
            return i + 1;
    return 0;
}

static void load_manifest(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); exit(2); }
    add_node("", 0, ROOT_INO, 1, 0);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    unsigned lineno = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
        if (got == 0 || line[0] == '#') continue;
        char *tab = strrchr(line, '\t');
        char *end;
        unsigned long long size = tab ? strtoull(tab + 1, &end, 10) : 0;
        if (!tab || tab == line || *end || end == tab + 1) {
            fprintf(stderr, "zerofs: %s:%u: expected \"relative/path<TAB>size\"\n", path, lineno);
            exit(2);
        }
        *tab = 0;
        fuse_ino_t parent = ROOT_INO;
        const char *p = line;
        while (*p == '/') p++;
        for (;;) {
            const char *slash = strchr(p, '/');
            size_t len = slash ? (size_t)(slash - p) : strlen(p);
            if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.')) {
                fprintf(stderr, "zerofs: %s:%u: bad path %s\n", path, lineno, line);
                exit(2);
            }
            fuse_ino_t found = find_child(parent, p, len);
            if (!slash) {
                if (found) { fprintf(stderr, "zerofs: %s:%u: %s listed twice\n", path, lineno, line); exit(2); }
                add_node(p, len, parent, 0, size);
                break;
            }
            if (found && !nodes[found - 1].is_dir) { fprintf(stderr, "zerofs: %s:%u: %s is under a file\n", path, lineno, line); exit(2); }
            parent = found ? found : add_node(p, len, parent, 1, 0);
            p = slash + 1;
        }
    }
    free(line);
    fclose(f);
    if (node_count == 1) die("the manifest lists no files");
}

static struct node *node_of(fuse_ino_t ino) {
    return ino >= 1 && ino <= node_count ? &nodes[ino - 1] : NULL;
}

static void fill_stat(fuse_ino_t ino, struct stat *st) {
    const struct node *n = &nodes[ino - 1];
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_mtim = st->st_ctim = st->st_atim = start_time;
    if (n->is_dir) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
        st->st_size = 4096;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)n->size;
        st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
        st->st_blksize = n->size >= direct_io_from ? 1 << 20 : 4096;  // as the daemon says
    }
}

static void z_init(void *userdata, struct fuse_conn_info *conn) {
    (void)userdata;
    conn->max_read = (unsigned)max_read;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
}

static void z_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    fuse_ino_t ino = node_of(parent) ? find_child(parent, name, strlen(name)) : 0;
    if (!ino) { fuse_reply_err(req, ENOENT); return; }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = ino;
    e.generation = 1;
    e.attr_timeout = e.entry_timeout = TIMEOUT;
    fill_stat(ino, &e.attr);
    fuse_reply_entry(req, &e);
}

static void z_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi;
    if (!node_of(ino)) { fuse_reply_err(req, ENOENT); return; }
    struct stat st;
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, TIMEOUT);
}

static void z_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct node *n = node_of(ino);
    if (!n) { fuse_reply_err(req, ENOENT); return; }
    if (n->is_dir) { fuse_reply_err(req, EISDIR); return; }
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) { fuse_reply_err(req, EROFS); return; }
    if (n->size >= direct_io_from) fi->direct_io = 1; else fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

static void z_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)fi;
    const struct node *n = node_of(ino);
    if (!n || n->is_dir) { fuse_reply_err(req, n ? EISDIR : ENOENT); return; }
    size_t count = 0;
    if (off >= 0 && (uint64_t)off < n->size) {
        uint64_t left = n->size - (uint64_t)off;
        count = size < left ? size : (size_t)left;
        if (count > max_read) count = max_read;  // the kernel never asks for more
    }
    fuse_reply_buf(req, zeros, count);
    __atomic_add_fetch(&stat_reads, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&stat_bytes, count, __ATOMIC_RELAXED);
    if (count > __atomic_load_n(&stat_largest, __ATOMIC_RELAXED)) __atomic_store_n(&stat_largest, count, __ATOMIC_RELAXED);
}

static void z_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct node *n = node_of(ino);
    if (!n) { fuse_reply_err(req, ENOENT); return; }
    if (!n->is_dir) { fuse_reply_err(req, ENOTDIR); return; }
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
}

// Offsets: 1 and 2 are "." and "..", 2 + i the i-th node (by inode order).
static void z_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)fi;
    struct node *dir = node_of(ino);
    if (!dir || !dir->is_dir) { fuse_reply_err(req, dir ? ENOTDIR : ENOENT); return; }
    char *buf = malloc(size);
    if (!buf) { fuse_reply_err(req, ENOMEM); return; }
    size_t used = 0;
    struct stat st;
    memset(&st, 0, sizeof st);
    for (off_t at = off; ; at++) {
        const char *name;
        fuse_ino_t child;
        if (at == 0) { name = "."; child = ino; }
        else if (at == 1) { name = ".."; child = dir->parent; }
        else {
            size_t i = (size_t)(at - 2);
            if (i >= node_count) break;
            if (i == 0 || nodes[i].parent != ino) continue;
            name = nodes[i].name;
            child = i + 1;
        }
        st.st_ino = child;
        st.st_mode = nodes[child - 1].is_dir ? S_IFDIR : S_IFREG;
        size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, at + 1);
        if (need > size - used) break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void z_statfs(fuse_req_t req, fuse_ino_t ino) {
    (void)ino;
    struct statvfs s;
    memset(&s, 0, sizeof s);
    uint64_t total = 0;
    for (size_t i = 0; i < node_count; i++) total += nodes[i].size;
    s.f_bsize = s.f_frsize = 4096;
    s.f_blocks = total / 4096 + 1;
    s.f_files = node_count;
    s.f_namemax = 255;
    fuse_reply_statfs(req, &s);
}

static const struct fuse_lowlevel_ops ops = {
    .init = z_init,
    .lookup = z_lookup,
    .getattr = z_getattr,
    .open = z_open,
    .read = z_read,
    .opendir = z_opendir,
    .readdir = z_readdir,
    .statfs = z_statfs,
};

// No SA_RESTART: the signal interrupts the main thread's wait in the loop
// (libfuse blocks these signals in its worker threads), which then sees the
// session ended and returns.
static void on_signal(int sig) {
    (void)sig;
    if (session) fuse_session_exit(session);
}

static unsigned long parse_number(const char *option, const char *value) {
    char *end;
    errno = 0;
    unsigned long long v = value ? strtoull(value, &end, 10) : 0;
    if (!value || !*value || *end || errno || v == 0) {
        fprintf(stderr, "zerofs: %s takes a positive integer\n", option);
        exit(2);
    }
    return (unsigned long)v;
}

int main(int argc, char *argv[]) {
    const char *manifest = NULL, *mountpoint = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-read-kib") == 0 && i + 1 < argc) max_read = parse_number(argv[i], argv[i + 1]) << 10, i++;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) max_threads = (unsigned)parse_number(argv[i], argv[i + 1]), i++;
        else if (strcmp(argv[i], "--direct-io-from") == 0 && i + 1 < argc) direct_io_from = parse_number(argv[i], argv[i + 1]), i++;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: zerofs MANIFEST MNT [--max-read-kib N] [--threads N] [--direct-io-from BYTES]\n");
            return strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
        else if (!manifest) manifest = argv[i];
        else if (!mountpoint) mountpoint = argv[i];
        else die("too many arguments (zerofs MANIFEST MNT [options])");
    }
    if (!manifest || !mountpoint) die("usage: zerofs MANIFEST MNT [--max-read-kib N] [--threads N] [--direct-io-from BYTES]");
    if (max_read > (1 << 20)) die("--max-read-kib: libfuse 3.14 serves at most 1024 KiB per request");
    clock_gettime(CLOCK_REALTIME, &start_time);
    load_manifest(manifest);

    // Touch every page: see the head comment (the zero page would flatter).
    zeros = aligned_alloc(4096, max_read);
    if (!zeros) die("out of memory");
    for (size_t i = 0; i < max_read; i += 4096) ((volatile char *)zeros)[i] = 0;
    memset(zeros, 0, max_read);

    char options[256];
    snprintf(options, sizeof options, "ro,noatime,default_permissions,fsname=zerofs,subtype=zerofs,max_read=%zu", max_read);
    char *fargv[] = { argv[0], "-o", options, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    session = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!session) die("libfuse refused the session options");
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
    if (fuse_session_mount(session, mountpoint) != 0) {
        fuse_session_destroy(session);
        die("mount failed (is /dev/fuse there, fuse3 installed, MNT an empty directory?)");
    }
    fprintf(stderr, "zerofs: mounted %s: %zu nodes, max_read %zu, %u threads, direct_io from %llu bytes\n",
            mountpoint, node_count, max_read, max_threads, (unsigned long long)direct_io_from);

    struct fuse_loop_config *config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_clone_fd(config, 1);
    int status = fuse_session_loop_mt(session, config);
    fuse_loop_cfg_destroy(config);
    fuse_session_unmount(session);
    fuse_session_destroy(session);
    fprintf(stderr, "zerofs: unmounted %s: %llu reads, %llu bytes, largest %llu bytes; loop status %d\n", mountpoint,
            (unsigned long long)stat_reads, (unsigned long long)stat_bytes, (unsigned long long)stat_largest, status);
    return status < 0 ? 1 : 0;
}
