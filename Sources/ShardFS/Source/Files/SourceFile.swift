#if canImport(Glibc)
import Glibc
#endif

/// One source file (a safetensors shard, an NxD rank or tensor file): its
/// name and the identity it had when first opened. It is not held open: each
/// access asks the budget (`OpenFiles`) for an open handle, which reopens the
/// file if it was closed meanwhile, and refuses it (`sourceChanged`) if it is
/// no longer the same file. Safe to use from any thread.
public final class SourceFile: Sendable {
    /// The name relative to the source directory, as the index or tag names
    /// it; held compactly (`SourceName`).
    public let sourceName: SourceName
    public var name: String { sourceName.string }
    /// The directory as given: one string all of a checkpoint's files share
    /// (a 70B training tag in xser is 330,000 files; a path of each held
    /// took 47 MB).
    private let directory: String
    public var path: String { directory.hasSuffix("/") ? directory + name : directory + "/" + name }
    /// What the file was when first opened.
    public let identity: SourceIdentity
    public var size: Int { identity.size }
    public var modificationTime: timespec { identity.modificationTime }
    public var inode: UInt { identity.inode }

    private let budget: OpenFiles
    /// This file's key in the budget.
    private let id: Int
    private static let nextID = Locked(0)

    /// Opens `directory/name` to learn what it is (the handle stays in the
    /// budget: a header parse usually follows).
    public convenience init(directory: String, name: String, budget: OpenFiles = .shared) throws(ShardFSError) {
        try self.init(directory: directory, sourceName: SourceName(name), budget: budget)
    }

    public init(directory: String, sourceName: SourceName, budget: OpenFiles = .shared) throws(ShardFSError) {
        self.sourceName = sourceName
        let name = sourceName.string
        self.directory = directory
        self.budget = budget
        id = SourceFile.nextID.withLock { $0 += 1; return $0 }
        let handle = try OpenSourceFile(path: directory.hasSuffix("/") ? directory + name : directory + "/" + name, name: name, expected: nil)
        identity = handle.identity
        _ = budget.insert(id, handle)
    }

    deinit { budget.remove(id) }

    /// The file, open: from the budget, or opened again (and checked to be
    /// the same file). Hold it only for the access at hand.
    public func open() throws(ShardFSError) -> OpenSourceFile {
        if let handle = budget.cached(id) { return handle }
        return budget.insert(id, try OpenSourceFile(path: path, name: name, expected: identity))
    }

    /// Reads exactly `buffer.count` bytes at `offset`; a short file is an error,
    /// since the header promised those bytes.
    public func read(at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        try open().read(at: offset, into: buffer)
    }

    /// Reads `count` bytes at `offset` into a new array (headers only: small).
    /// Bytes past the end are refused before anything is allocated for them.
    public func readBytes(at offset: Int, count: Int) throws(ShardFSError) -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw ShardFSError.badSource(file: name, reason: "is \(size) bytes long: it holds no \(count) bytes at \(offset)")
        }
        return try open().readBytes(at: offset, count: count)
    }

    /// Brings bytes `range` into the page cache (see `OpenSourceFile.prefetch`);
    /// a file that cannot be opened is left to the read that needs it.
    public func prefetch(_ range: Range<Int>) {
        (try? open())?.prefetch(range)
    }

    /// How the file differs from what was first opened, or nil: an fstat of
    /// its descriptor when it is open (a change in place), else a stat of the
    /// path. Never opens it.
    public func change() -> String? {
        if let handle = budget.cached(id, touch: false) { return handle.change() }
        return pathChange()
    }

    /// How the file at `path` differs (deleted, replaced by a rename, changed).
    public func pathChange() -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return errno == ENOENT ? "deleted" : "stat failed (errno \(errno))" }
        return identity.difference(from: info)
    }
}
