import CGather
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Read leases on open source files, and what happens when one breaks.
///
/// A mount hands the kernel a source's descriptor (splice) rather than a copy
/// of its bytes: the kernel reads them when the reply is sent, so nothing the
/// daemon checks before that can vouch for them. A read lease can: while it
/// is held, another process's `open` for writing (or `truncate`) of the file
/// waits. When one tries, the kernel tells us (a signal, relayed through a
/// pipe to this object's thread); we mark the source changed (every read that
/// starts from then on fails with EIO), wait for the reads still using it,
/// and only then let go, so the writer's first byte lands after the last
/// byte we served. No reader ever sees a mix of old and new bytes.
///
/// A lease is only as wide as the node: on a network file system (Lustre,
/// NFS) or a FUSE file system, the kernel grants a lease that another node
/// (or the FUSE server's own backing files) never breaks. Leases are taken
/// only on local disk file systems (`leasesHold`); elsewhere, and where the
/// kernel refuses one (the file already open for writing), a source is
/// "unleased" and the mount serves it as its policy says
/// (`SourceSplicing`).
///
/// One per process: the kernel signals the process, whichever mount or
/// budget opened the file.
public final class ReadLeases: Sendable {
    /// The process's leases, or nil when break notices cannot be set up.
    public static let shared: ReadLeases? = ReadLeases()

    /// Told of every break (a mount's `SourceWatch` marks the source changed).
    public protocol Observer: AnyObject, Sendable {
        /// The file at `path` with `identity` is being opened for writing or
        /// truncated by another process.
        func leaseBroken(path: String, identity: SourceIdentity)
    }

    private struct WeakHandle: @unchecked Sendable {
        weak var handle: OpenSourceFile?
    }

    private struct WeakObserver: @unchecked Sendable {
        weak var observer: (any Observer)?
    }

    private struct State {
        var byDescriptor: [Int32: WeakHandle] = [:]
        var observers: [WeakObserver] = []
        var refused = 0
        var broken = 0
        /// A few unleased files, for `status`.
        var refusedExamples: [String] = []
    }

    private let state = Locked(State())
    private let signal: Int32
    /// The pipe's read end; its write end belongs to the signal handler
    /// for the life of the process.
    private let noticeRead: Int32

    private init?() {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return nil }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        let signal = shardfs_lease_notices_to(ends[1])
        guard signal > 0 else {
            close(ends[0])
            close(ends[1])
            return nil
        }
        // Never block the signal handler: a full pipe drops the notice (the
        // kernel then ends the break itself after lease-break-time).
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) | O_NONBLOCK)
        self.signal = signal
        noticeRead = ends[0]
        // The process's one instance lives as long as the process: so does its thread.
        let leases = Unmanaged.passUnretained(self)
        WorkerPool.Threads().start(1) { leases.takeUnretainedValue().serveNotices() }
    }

    /// Adds `observer` (held weakly) to those told of breaks.
    public func observe(_ observer: any Observer) {
        state.withLock { s in
            s.observers.removeAll { $0.observer == nil }
            s.observers.append(WeakObserver(observer: observer))
        }
    }

    /// Leases held now (taken, not broken), refused so far, broken so far,
    /// and some refused files.
    public var counts: (held: Int, refused: Int, broken: Int, refusedExamples: [String]) {
        state.withLock { s in
            (s.byDescriptor.values.filter { $0.handle?.holdsLease == true }.count, s.refused, s.broken, s.refusedExamples)
        }
    }

    /// Tries to lease `handle`'s file; returns why not, or nil when leased.
    func take(_ handle: OpenSourceFile) -> String? {
        let why: String?
        if let kind = ReadLeases.fileSystemWithoutLeases(handle.descriptor.rawValue) {
            why = "on \(kind): a lease there would not see writers on other nodes"
        } else {
            let status = shardfs_take_read_lease(handle.descriptor.rawValue, signal)
            why = status == 0 ? nil : status == EAGAIN ? "open for writing elsewhere" : ShardFSError.describe(errno: status)
        }
        state.withLock { s in
            if why == nil {
                s.byDescriptor[handle.descriptor.rawValue] = WeakHandle(handle: handle)
            } else {
                s.refused += 1
                if s.refusedExamples.count < 8 { s.refusedExamples.append("\(handle.name): \(why!)") }
            }
        }
        return why
    }

    /// `handle` is closing: its lease goes with its descriptor.
    func forget(_ descriptor: Int32) {
        _ = state.withLock { $0.byDescriptor.removeValue(forKey: descriptor) }
    }

    /// Reads break notices until the process ends.
    private func serveNotices() {
        var descriptor: Int32 = -1
        while true {
            let got = read(noticeRead, &descriptor, 4)
            if got != 4 {
                if got < 0 && errno == EINTR { continue }
                return
            }
            breakLease(descriptor)
        }
    }

    /// A writer waits on `descriptor`'s file: mark it, drain its readers, let go.
    private func breakLease(_ descriptor: Int32) {
        guard let handle = state.withLock({ $0.byDescriptor[descriptor]?.handle }),
              // A notice for a descriptor since closed and reused: that file's lease is intact.
              shardfs_lease_state(descriptor) != Int32(F_RDLCK) else { return }
        let observers = state.withLock { s in
            s.broken += 1
            return s.observers.compactMap(\.observer)
        }
        handle.leaseBroke()
        for observer in observers { observer.leaseBroken(path: handle.path, identity: handle.identity) }
        handle.waitUntilUnused()
        _ = shardfs_release_lease(descriptor)
    }

    /// The kind of file system `descriptor` is on when leases there cannot be
    /// trusted, else nil. Trusted: the local disk and memory file systems,
    /// where every writer is on this node and so meets the lease.
    static func fileSystemWithoutLeases(_ descriptor: Int32) -> String? {
        let type = shardfs_file_system_type(descriptor)
        guard type >= 0 else { return "a file system fstatfs cannot name" }
        let local: [Int: String] = [
            0xEF53: "ext4", 0x5846_5342: "xfs", 0x9123_683E: "btrfs", 0x0102_1994: "tmpfs",
            0x794C_7630: "overlayfs", 0xF2F5_2010: "f2fs", 0x2FC1_2FC1: "zfs", 0xCA45_1A4E: "bcachefs",
        ]
        let magic = Int(type) & 0xFFFF_FFFF
        if local[magic] != nil { return nil }
        let named: [Int: String] = [0x6573_5546: "a FUSE file system", 0x0BD0_0BD0: "Lustre", 0x6969: "NFS",
                                    0xFF53_4D42: "CIFS", 0x0102_1997: "9p"]
        return named[magic] ?? "a file system of type 0x\(String(magic, radix: 16))"
    }
}
