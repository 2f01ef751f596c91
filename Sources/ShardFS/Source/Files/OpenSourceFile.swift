import CGather
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
}
