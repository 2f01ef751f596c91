import CGather
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A source file while it is open: its descriptor and, once a gather asks for
/// them, its mappings. Made and dropped by `OpenFiles` (the budget), held by
/// a reader only for the read at hand: when the budget evicts it, it stays
/// open until its last holder lets go (ARC), then unmaps and closes.
public final class OpenSourceFile: Sendable {
    public let descriptor: FileDescriptor
    /// The identity the file had when this descriptor was opened.
    public let identity: SourceIdentity
    let path: String
    let name: String
    public var size: Int { identity.size }

    private struct Mappings {
        /// Advised MADV_RANDOM: gathers copy rows out of it.
        var random: UnsafeRawPointer?
        /// Advised MADV_HUGEPAGE: the prefetcher populates the page cache through it.
        var hugePage: UnsafeRawPointer?
        var tried = false
    }
    private let mappings = Locked(Mappings())

    /// Whether this descriptor holds a read lease (`ReadLeases`), as the
    /// hot path reads it: no lock, no system call once decided.
    private let leaseState = Atomic<UInt8>(LeaseState.untried)
    /// Why it holds none (nil while leased or untried).
    private let unleasedReason = Locked<String?>(nil)
    /// Reads using this descriptor now: a lease break waits for them.
    private let users = Atomic<Int>(0)

    private enum LeaseState {
        static let untried: UInt8 = 0, leased: UInt8 = 1, unleased: UInt8 = 2, broken: UInt8 = 3
    }

    /// Opens `path`; when `expected` is given, the file must still be that file.
    init(path: String, name: String, expected: SourceIdentity?) throws(ShardFSError) {
        self.path = path
        self.name = name
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec])
        } catch {
            throw ShardFSError.io(path: path, operation: "open", error: error)
        }
        var info = stat()
        guard fstat(fd.rawValue, &info) == 0 else {
            let code = errno
            try? fd.close()
            throw ShardFSError.io(path: path, operation: "fstat", errno: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            try? fd.close()
            throw ShardFSError.badSource(file: name, reason: "not a regular file")
        }
        if let expected, let difference = expected.difference(from: info) {
            try? fd.close()
            throw ShardFSError.sourceChanged(file: name, reason: difference)
        }
        descriptor = fd
        identity = expected ?? SourceIdentity(info)
    }

    deinit {
        if leaseState.load(ordering: .relaxed) != LeaseState.untried { ReadLeases.shared?.forget(descriptor.rawValue) }
        let mapped = mappings.withLock { $0 }
        if let random = mapped.random {
            // Before the address range can be reused: a later release of a
            // recorded chunk would otherwise wipe whatever is mapped there.
            MappedPages.forget(random)
            munmap(UnsafeMutableRawPointer(mutating: random), size)
        }
        if let hugePage = mapped.hugePage { munmap(UnsafeMutableRawPointer(mutating: hugePage), size) }
        try? descriptor.close()
    }

    /// The MADV_RANDOM mapping of the whole file, made on first use; nil when
    /// the file is empty or cannot be mapped (a file on a FUSE mount with
    /// direct_io, say): readers then fall back to pread. Address space only:
    /// `MappedPages` releases the page-table entries gathers leave behind.
    var mapping: UnsafeRawPointer? { mapped().random }

    /// Files smaller than this get one mapping with the kernel's default
    /// readahead and no huge-page one: a gather reads most of such a file
    /// anyway, and a trained tag's 16,000 tensor files each paid two mmaps,
    /// two madvises and two munmaps.
    static let smallFileBytes = 2 << 20

    private func mapped() -> Mappings {
        mappings.withLock { m in
            if !m.tried {
                m.tried = true
                if size < OpenSourceFile.smallFileBytes {
                    m.random = OpenSourceFile.map(descriptor, size: size, advice: nil)
                } else {
                    // No readahead beyond what a gather touches: its reads are rows.
                    m.random = OpenSourceFile.map(descriptor, size: size, advice: MADV_RANDOM)
                    m.hugePage = m.random == nil ? nil : OpenSourceFile.map(descriptor, size: size, advice: MADV_HUGEPAGE)
                }
            }
            return m
        }
    }

    /// A read-only shared mapping of the whole file with `advice`, or nil.
    private static func map(_ fd: FileDescriptor, size: Int, advice: Int32?) -> UnsafeRawPointer? {
        guard size > 0, let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, fd.rawValue, 0), mapped != MAP_FAILED else { return nil }
        if let advice { madvise(mapped, size, advice) }
        return UnsafeRawPointer(mapped)
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an
    /// error, since the header promised those bytes.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        try descriptor.readExactly(at: offset, into: buffer, path: path, name: name)
    }

    /// Reads `count` bytes at `offset` into a new array (small reads:
    /// headers, zip directories, pickles).
    public func readBytes(at offset: Int, count: Int) throws(ShardFSError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: ShardFSError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(ShardFSError) { try read(at: offset, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// How the file differs now from what was opened (an fstat of the open
    /// descriptor: catches a change in place, not a rename over the path).
    public func change() -> String? {
        switch leaseState.load(ordering: .sequentiallyConsistent) {
        case LeaseState.broken: return OpenSourceFile.leaseBreak
        // Checked when the lease was taken; any writer since broke it first.
        case LeaseState.leased: return nil
        default: break
        }
        var info = stat()
        guard fstat(descriptor.rawValue, &info) == 0 else { return "fstat failed (errno \(errno))" }
        return identity.difference(from: info)
    }

    /// Brings bytes `range` into the page cache, waiting for them.
    ///
    /// Through a mapping advised MADV_HUGEPAGE, the kernel reads in folios of
    /// up to 2 MiB (with readahead of the next ones in flight), where
    /// posix_fadvise(WILLNEED) reads single pages: measured on the 1B TP=32
    /// load, gathers from such pages took 8x the page faults and 2.5x the
    /// daemon's CPU. An I/O error is not reported here: the reader that needs
    /// those bytes meets it (EIO) when it reads them.
    public func prefetch(_ range: Range<Int>) {
        let range = range.clamped(to: 0..<size)
        guard !range.isEmpty else { return }
        if let hugePage = mapped().hugePage, shardfs_populate(descriptor.rawValue, hugePage, size, range.lowerBound, range.count) != EINVAL { return }
        // Kernels before 5.14 lack MADV_POPULATE_READ.
        _ = posix_fadvise(descriptor.rawValue, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_WILLNEED)
    }

    // MARK: Leases (what a mount's reads use; see `ReadLeases`)

    static let leaseBreak = "opened for writing or truncated by another process"

    /// Whether this descriptor holds a read lease, taking one on first ask
    /// (and checking, under it, that the file is still what was planned:
    /// a write just before the lease is then caught too).
    public func leased(_ leases: ReadLeases) -> Bool {
        switch leaseState.load(ordering: .acquiring) {
        case LeaseState.leased: return true
        case LeaseState.untried: break
        default: return false
        }
        return unleasedReason.withLock { reason in
            let now = leaseState.load(ordering: .acquiring)
            guard now == LeaseState.untried else { return now == LeaseState.leased }
            reason = leases.take(self)
            if reason == nil, let difference = change() {
                // Changed before the lease: refused, so the read's own check finds it.
                _ = shardfs_release_lease(descriptor.rawValue)
                reason = difference
            }
            leaseState.store(reason == nil ? LeaseState.leased : LeaseState.unleased, ordering: .releasing)
            return reason == nil
        }
    }

    /// Whether a lease is held now (taken, not broken). No lock: `ReadLeases`
    /// asks it under its own.
    var holdsLease: Bool { leaseState.load(ordering: .acquiring) == LeaseState.leased }

    /// How this file is served as to leases: "leased", "unleased: why",
    /// "lease broken", or nil before any read asked.
    public var leaseDescription: String? {
        switch leaseState.load(ordering: .acquiring) {
        case LeaseState.leased: return "leased"
        case LeaseState.broken: return "lease broken"
        case LeaseState.unleased: return "unleased: " + (unleasedReason.withLock { $0 } ?? "")
        default: return nil
        }
    }

    /// Starts a read's use of this descriptor; false (and nothing to end)
    /// once its lease has broken. The order (count, then look) against the
    /// break's (mark, then wait for the count) lets no read slip between.
    public func startUse() -> Bool {
        users.add(1, ordering: .sequentiallyConsistent)
        if leaseState.load(ordering: .sequentiallyConsistent) == LeaseState.broken {
            users.subtract(1, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Ends a use begun with `startUse` (after the reply holding its bytes was sent).
    public func endUse() { users.subtract(1, ordering: .sequentiallyConsistent) }

    /// The lease is breaking: no new read may use this descriptor.
    func leaseBroke() { leaseState.store(LeaseState.broken, ordering: .sequentiallyConsistent) }

    /// Waits until no read uses this descriptor (a break, before letting go).
    func waitUntilUnused() {
        while users.load(ordering: .sequentiallyConsistent) > 0 { usleep(50) }
    }
}
