#ifndef SHARDFS_LEASE_H
#define SHARDFS_LEASE_H

/// Read leases on source files (fcntl F_SETLEASE, F_RDLCK): while one is
/// held, the kernel makes any other process's open for writing, or truncate,
/// of that file wait until the holder lets go (at most
/// /proc/sys/fs/lease-break-time seconds), and tells the holder with a
/// signal. The daemon splices source bytes only under a lease: the bytes a
/// splice moves are read when the reply is sent, and the lease is what keeps
/// a writer out until then.

/// Sends every lease-break notice of this process to `pipe_fd` as the 4-byte
/// descriptor whose lease is breaking (from a signal handler, the only
/// async-signal-safe way out). Returns the signal used, or -errno.
int shardfs_lease_notices_to(int pipe_fd);

/// Takes a read lease on `fd` (open read-only), to be announced with signal
/// `signal` (from `shardfs_lease_notices_to`). Returns 0 or an errno:
/// EAGAIN when the file is open for writing somewhere, EINVAL where the
/// file system has no leases.
int shardfs_take_read_lease(int fd, int signal);

/// The lease now on `fd`: F_RDLCK while held and not breaking, F_UNLCK once
/// a break has begun (or none is held), or -errno.
int shardfs_lease_state(int fd);

/// Gives the lease on `fd` up (lets a waiting writer in). Returns 0 or an errno.
int shardfs_release_lease(int fd);

/// The file system type (`statfs`'s f_type magic) of `fd`'s file, or -errno.
long long shardfs_file_system_type(int fd);

#endif
