import CGather
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// One opened source file (a safetensors shard), read with `pread` from any
/// thread. Its identity (size, mtime, inode) is captured at open time so that
/// front ends can notice a file that changed under them.
public final class SourceFile: Sendable {
    /// The name relative to the model directory, as the index names it.
    public let name: String
    public let path: String
    public let descriptor: FileDescriptor
    public let size: Int
    public let modificationTime: timespec
    public let inode: UInt
    /// A read-only mapping of the whole file, for gathering narrow column
    /// cuts without a system call per row (nil when mapping failed: readers
    /// fall back to pread). Address space only: `MappedPages` releases the
    /// page-table entries gathers leave behind.
    nonisolated(unsafe) let mapping: UnsafeRawPointer?  // read-only memory: safe to share
    /// A second mapping, advised MADV_HUGEPAGE, through which the prefetcher
    /// populates the page cache (see `prefetch`).
    nonisolated(unsafe) let prefetchMapping: UnsafeRawPointer?

    /// `mapped: false` opens the file for pread only: no mappings, so no
    /// gather ever records pages of it in `MappedPages`. A file opened and
    /// closed again while the process goes on (a rank file `verify` checks)
    /// must be opened so: `MappedPages` may release a recorded span after
    /// the mapping is gone, when its addresses may belong to other memory.
    public init(directory: String, name: String, mapped: Bool = true) throws(ShardFSError) {
        self.name = name
        self.path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
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
        self.descriptor = fd
        self.size = Int(info.st_size)
        self.modificationTime = info.st_mtim
        self.inode = UInt(info.st_ino)
        // No readahead beyond what a gather touches: its reads are rows.
        mapping = mapped ? SourceFile.map(fd, size: size, advice: MADV_RANDOM) : nil
        prefetchMapping = mapped ? SourceFile.map(fd, size: size, advice: MADV_HUGEPAGE) : nil
    }

    /// A read-only shared mapping of the whole file with `advice`, or nil
    /// (empty file, or mapping failed).
    private static func map(_ fd: FileDescriptor, size: Int, advice: Int32) -> UnsafeRawPointer? {
        guard size > 0, let mapped = mmap(nil, size, PROT_READ, MAP_SHARED, fd.rawValue, 0), mapped != MAP_FAILED else { return nil }
        madvise(mapped, size, advice)
        return UnsafeRawPointer(mapped)
    }

    deinit {
        if let mapping {
            // Before the address range can be reused: a later release of a
            // recorded chunk would otherwise wipe whatever is mapped there.
            MappedPages.forget(mapping)
            munmap(UnsafeMutableRawPointer(mutating: mapping), size)
        }
        if let prefetchMapping { munmap(UnsafeMutableRawPointer(mutating: prefetchMapping), size) }
        try? descriptor.close()
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error,
    /// since the header promised those bytes.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        try descriptor.readExactly(at: offset, into: buffer, path: path, name: name)
    }

    /// Reads `count` bytes at `offset` into a new array (headers only: small).
    public func readBytes(at offset: Int, count: Int) throws(ShardFSError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: ShardFSError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(ShardFSError) { try read(at: offset, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }
}

extension SourceFile {
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
        if let prefetchMapping, shardfs_populate(descriptor.rawValue, prefetchMapping, size, range.lowerBound, range.count) != EINVAL { return }
        // Kernels before 5.14 lack MADV_POPULATE_READ.
        _ = posix_fadvise(descriptor.rawValue, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_WILLNEED)
    }
}
