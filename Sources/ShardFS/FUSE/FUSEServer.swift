import CFuse
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The session whose loop a SIGINT/SIGTERM ends (one mount per process).
/// An `Atomic`, not a `Locked`: the signal handler reads it, and a lock
/// taken there would deadlock should the signal land on a thread holding it.
private let signalledSession = Atomic<Int>(0)

/// Serves a `MountedFileSystem` through libfuse's low-level API: mounts,
/// runs the multithreaded loop until unmounted or signalled, and unmounts.
public final class FUSEServer: @unchecked Sendable {
    public let fileSystem: MountedFileSystem
    public let options: FUSEMountOptions
    public let logger: Logger
    public let totalBytes: Int
    /// Set once at INIT, read by every read. This and the four counters
    /// below are `Atomic`s, not `Locked`: every read the mount serves
    /// touches them, on every FUSE thread at once, and a lock would be the
    /// one place those threads all meet; they guard no other state, so
    /// relaxed lock-free loads and adds are all they need.
    private let spliceNegotiated = Atomic<Bool>(false)
    /// What the watcher thread polls: INIT done, and the loop ended.
    private let loop = Locked<(initialised: Bool, stopping: Bool)>((false, false))
    private let reportedProblems = Locked<Set<String>>([])
    /// Reads in progress, and when the last one ended (monotonic ns): the
    /// materialiser backs off while readers are active.
    private let activeReads = Atomic<Int>(0)
    private let lastReadEnd = Atomic<Int>(0)
    private let readsServed = Atomic<Int>(0)
    private let bytesServed = Atomic<Int>(0)
    /// Status snapshots of open `.shardfs-status` handles, by file handle.
    private let statusSnapshots = Locked<(next: UInt64, open: [UInt64: [UInt8]])>((1, [:]))
    /// Describes the mount for `shardfs status` (set before `run`).
    public let describe: @Sendable (_ readsServed: Int, _ bytesServed: Int) -> MountStatus

    public init(fileSystem: MountedFileSystem, options: FUSEMountOptions, logger: Logger,
                describe: @escaping @Sendable (_ readsServed: Int, _ bytesServed: Int) -> MountStatus) {
        self.fileSystem = fileSystem
        self.options = options
        self.logger = logger
        self.describe = describe
        totalBytes = fileSystem.tree.nodes.reduce(0) { $0 + ($1.isDirectory ? 0 : $1.size) }
    }

    /// The inode of the hidden status file: just past the tree's.
    var statusInode: UInt64 { UInt64(fileSystem.tree.nodes.count + 1) }

    /// Whether a read is in progress or ended less than `quietNanoseconds` ago.
    public func readersActive(quietNanoseconds: Int = 200_000_000) -> Bool {
        activeReads.load(ordering: .relaxed) > 0 || Monotonic.nanoseconds - lastReadEnd.load(ordering: .relaxed) < quietNanoseconds
    }

    func readStarted() { activeReads.add(1, ordering: .relaxed) }

    func readEnded(bytes: Int) {
        activeReads.subtract(1, ordering: .relaxed)
        lastReadEnd.store(Monotonic.nanoseconds, ordering: .relaxed)
        readsServed.add(1, ordering: .relaxed)
        bytesServed.add(bytes, ordering: .relaxed)
    }

    /// A fresh status snapshot.
    func statusBytes() -> [UInt8] {
        describe(readsServed.load(ordering: .relaxed), bytesServed.load(ordering: .relaxed)).json()
    }

    /// Keeps a snapshot for an open status handle; returns the handle.
    func openStatus() -> UInt64 {
        let snapshot = statusBytes()
        return statusSnapshots.withLock { state in
            defer { state.next += 1 }
            state.open[state.next] = snapshot
            return state.next
        }
    }

    func statusSnapshot(_ handle: UInt64) -> [UInt8]? { statusSnapshots.withLock { $0.open[handle] } }

    func closeStatus(_ handle: UInt64) { _ = statusSnapshots.withLock { $0.open.removeValue(forKey: handle) } }

    /// Whether reads may hand source descriptors to the kernel.
    var spliceEnabled: Bool { spliceNegotiated.load(ordering: .relaxed) }

    func negotiated(splice: Bool) {
        spliceNegotiated.store(splice, ordering: .relaxed)
        loop.withLock { $0.initialised = true }
        logger.info("kernel connection ready: max_read \(options.maximumRead), splice \(splice ? "on" : "off"), \(options.directIO ? "direct_io" : "page cache")")
    }

    /// Logs a source problem once per (file, source) pair: readers retry.
    func reportSourceProblem(file: String, source: String, problem: String) {
        let key = file + "\u{0}" + source
        guard reportedProblems.withLock({ $0.insert(key).inserted }) else { return }
        logger.error("\(file): EIO: source \(source) \(problem) since mounting; remount to serve the new bytes")
    }

    /// The version of the libfuse this binary runs with (linked in, in the package).
    public static var libfuseVersion: String { String(cString: fuse_pkgversion()) }

    /// Mounts, calls `ready` once the mount is visible, serves until
    /// unmounted (`shardfs unmount`, `fusermount3 -u`) or SIGINT/SIGTERM,
    /// then unmounts. Throws when mounting fails.
    public func run(ready: () -> Void) throws(ShardFSError) {
        var ops = shardfsOperations()
        let arguments: [String] = ["shardfs", "-o", options.optionString]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        var argvPointers: [UnsafeMutablePointer<CChar>?] = argv + [nil]
        let retained = Unmanaged.passRetained(self)
        defer { retained.release() }
        let session: OpaquePointer? = argvPointers.withUnsafeMutableBufferPointer { pointers in
            var args = fuse_args(argc: Int32(argv.count), argv: pointers.baseAddress, allocated: 0)
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, retained.toOpaque())
        }
        guard let session else {
            throw ShardFSError.badSource(file: options.mountpoint, reason: "libfuse refused the session options \(options.optionString)")
        }
        defer { fuse_session_destroy(session) }
        guard fuse_session_mount(session, options.mountpoint) == 0 else {
            if geteuid() != 0 {
                // libfuse printed fusermount3's own reason to stderr, the daemon's log.
                throw ShardFSError.badSource(file: options.mountpoint, reason: "fusermount3 could not mount it as uid \(geteuid()): it must be installed (package fuse3), /dev/fuse open to users, and the mount point a directory you own")
            }
            throw ShardFSError.io(path: options.mountpoint, operation: "mount (is /dev/fuse available, and fuse3 installed?)", errno: EPERM)
        }
        defer {
            fuse_session_unmount(session)
            logger.info("unmounted \(options.mountpoint)")
        }
        installSignalHandlers(session)
        logger.info("mounted \(options.mountpoint): \(fileSystem.tree.nodes.filter { !$0.isDirectory }.count) files, \(totalBytes) bytes")
        let watcherDone = startSourceWatcher(session)
        ready()

        let config = fuse_loop_cfg_create()
        defer { fuse_loop_cfg_destroy(config) }
        fuse_loop_cfg_set_max_threads(config, UInt32(options.maximumThreads))
        fuse_loop_cfg_set_clone_fd(config, 1)
        let status = shardfs_session_loop_mt(session, config)
        loop.withLock { $0.stopping = true }
        fileSystem.watch.wake()
        watcherDone.wait()  // it must not notify a destroyed session
        if status != 0 { logger.warning("session loop ended with status \(status)") }
        signalledSession.store(0, ordering: .relaxed)
    }

    /// SIGINT/SIGTERM end the loop (without SA_RESTART, the signal interrupts
    /// the thread blocked in read or in the loop's wait), and we unmount.
    private func installSignalHandlers(_ session: OpaquePointer) {
        signalledSession.store(Int(bitPattern: UnsafeRawPointer(session)), ordering: .relaxed)
        for signal in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in
                let bits = signalledSession.load(ordering: .relaxed)
                if let session = OpaquePointer(bitPattern: bits) { fuse_session_exit(session) }
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            sigaction(signal, &action, nil)
        }
    }

    /// Files read through the page cache (all with --page-cache, the small
    /// ones otherwise) are read ahead 128 KiB per request unless the mount's
    /// bdi says otherwise; raise it to the request size (root
    /// only; harmless to skip). The kernel lowers it to what INIT negotiated
    /// when INIT completes, so this runs after INIT, and again should it have
    /// raced with it. Returns whether there is nothing (more) to do.
    private func tuneReadahead() -> Bool {
        // The device comes from mountinfo: a stat of the mount point would
        // ask this very file system and wait for our own loop.
        guard !options.directIO || options.directIOFromBytes > 0, let device = MountTable.entries().last(where: { $0.mountPoint == options.mountpoint })?.device else { return true }
        let path = "/sys/class/bdi/\(device)/read_ahead_kb"
        let wanted = options.maximumRead / 1024
        if let current = try? String(contentsOfFile: path, encoding: .utf8), Int(current.trimmingCharacters(in: .whitespacesAndNewlines)) == wanted {
            return true
        }
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else {
            let code = errno
            let reason = code == EACCES || code == EPERM ? "only root may tune it" : ShardFSError.describe(errno: code)
            logger.info("readahead left at the kernel's default: cannot open \(path) (\(reason))")
            return true
        }
        defer { close(fd) }
        let value = "\(wanted)\n"
        if value.withCString({ write(fd, $0, strlen($0)) }) > 0 { logger.info("readahead set to \(wanted) KiB") }
        return false  // check again on the next tick
    }

    /// Watches the sources (`SourceWatch.tick`: change events as they come,
    /// a share of the paths stat'ed each second); a changed source turns its
    /// files into EIO and drops their cached pages so no reader keeps stale bytes.
    private func startSourceWatcher(_ session: OpaquePointer) -> WorkerPool.Threads {
        let sessionBits = Int(bitPattern: UnsafeRawPointer(session))
        let watcher = WorkerPool.Threads()
        watcher.start(1) { [self] in
            var readaheadSettled = false
            while true {
                let (initialised, stopping) = loop.withLock { $0 }
                if stopping { break }
                if !readaheadSettled, initialised { readaheadSettled = tuneReadahead() }
                // Readahead is tuned right after INIT, before the first reads.
                fileSystem.watch.tick(milliseconds: readaheadSettled ? 1000 : 5)
                // A read may have found the change first: either way, each
                // broken source gets its files' cached pages dropped once.
                for index in fileSystem.watch.takeNewlyBroken() {
                    let source = fileSystem.watch.sources[index]
                    let inodes = fileSystem.inodes(usingSource: index)
                    logger.error("source \(source.name) \(fileSystem.watch.problem(index) ?? "changed"): \(inodes.count) files now fail with EIO")
                    for inode in inodes {
                        _ = fuse_lowlevel_notify_inval_inode(OpaquePointer(bitPattern: sessionBits), inode, 0, 0)
                    }
                }
            }
        }
        return watcher
    }
}
