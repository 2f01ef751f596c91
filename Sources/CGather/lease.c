// Read leases and their break notices; see shardfs_lease.h.
#define _GNU_SOURCE
#include "shardfs_lease.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

// Where the handler writes: one pipe for the process (leases are per process).
static volatile int notice_pipe = -1;

static void on_lease_break(int signal, siginfo_t *info, void *context) {
    (void)signal;
    (void)context;
    int saved = errno;
    int fd = info->si_fd;
    if (notice_pipe >= 0) {
        // A 4-byte write to a pipe is atomic; a full pipe drops the notice,
        // and the break still completes after lease-break-time.
        ssize_t ignored = write(notice_pipe, &fd, sizeof fd);
        (void)ignored;
    }
    errno = saved;
}

int shardfs_lease_notices_to(int pipe_fd) {
    // A real-time signal: queued, one per break, each carrying its descriptor
    // (SIGIO, the default, coalesces and names no descriptor).
    int signal = SIGRTMIN + 6;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_lease_break;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    notice_pipe = pipe_fd;
    if (sigaction(signal, &action, NULL) != 0) return -errno;
    return signal;
}

int shardfs_take_read_lease(int fd, int signal) {
    if (fcntl(fd, F_SETSIG, signal) != 0) return errno;
    if (fcntl(fd, F_SETLEASE, F_RDLCK) != 0) return errno;
    return 0;
}

int shardfs_lease_state(int fd) {
    int state = fcntl(fd, F_GETLEASE);
    return state < 0 ? -errno : state;
}

int shardfs_release_lease(int fd) {
    return fcntl(fd, F_SETLEASE, F_UNLCK) == 0 ? 0 : errno;
}

long long shardfs_file_system_type(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return -errno;
    return (long long)(unsigned long)info.f_type;
}
