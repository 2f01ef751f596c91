#if canImport(Glibc)
import Glibc
#endif

/// The file system a mount serves, with no FUSE in it: the tree, attributes,
/// and the answer to "which bytes make up this read". The FUSE adapter
/// translates kernel requests to these calls; tests call them directly.
public final class MountedFileSystem: Sendable {
    public let tree: FileTree
    public let watch: SourceWatch
    /// Source file indexes each inode's bytes come from.
    private let sourcesOfInode: [UInt64: [Int]]
    /// mtime shown for every entry: the newest source's.
    public let modificationTime: timespec
    public let owner: (uid: uid_t, gid: gid_t)
    /// Idle read contexts, in stripes chosen by thread: a request takes one
    /// from its thread's stripe, so readers on different threads meet at no
    /// common lock.
    private let readers: [Locked<[ReadContext]>]
    private static let readerStripes = 16
    /// The largest read the kernel will send (the buffer each context holds).
    public let maximumRead: Int
    /// Files at least this large are streamed (direct_io, large reads);
    /// smaller ones go through the page cache.
    public static let streamingFileBytes = 8 << 20
    /// Files answered from their persisted, verified copies (`--persist-to`).
    public let persisted: PersistedCopies
    /// Requests the storage ranges ahead of each open file's reader (nil: off).
    public let prefetcher: Prefetcher?
    /// Recipe files (optimizer files, xser tensor files, DCP files) made for
    /// the reads that follow, by inode: a file is made once for its reader's
    /// requests, not once per request. 64 files and 24 MiB: a DCP file of
    /// a 70B state split 64 ways is a few thousand archives, 1 to 3 MB of
    /// framing, and eight readers each keep one or two files going.
    let made = MadeFiles<UInt64>(capacity: 64, byteBudget: 24 << 20)
    /// Which source bytes are spliced rather than copied.
    public let splicing: SourceSplicing

    /// A reader with its request buffer; one per concurrent request. Only
    /// ever used by one thread at a time: the pool's mutex hands it over.
    public final class ReadContext: @unchecked Sendable {
        public let reader: ExtentReader
        public let buffer: UnsafeMutableRawBufferPointer

        init(sources: [SourceFile], bufferSize: Int) {
            reader = ExtentReader(sources: sources, scratchBytes: 1 << 20)
            buffer = .allocate(byteCount: bufferSize, alignment: 4096)
        }

        deinit { buffer.deallocate() }
    }

    /// `prefetch` nil turns reading ahead off.
    public init(checkpoint: Checkpoint, files: some Collection<(path: String, file: PlannedFile)>, maximumRead: Int = 1 << 20,
                prefetch: Prefetcher.Options? = Prefetcher.Options(), splicing: SourceSplicing = .always) {
        self.splicing = splicing
        let tree = FileTree(files: Array(files))
        self.tree = tree
        watch = SourceWatch(sources: checkpoint.files)
        var sourcesOfInode: [UInt64: [Int]] = [:]
        for node in tree.nodes {
            guard case let .file(file) = node.kind else { continue }
            sourcesOfInode[node.inode] = file.sourceFileIndexes
        }
        self.sourcesOfInode = sourcesOfInode
        modificationTime = checkpoint.files.map(\.modificationTime)
            .max { ($0.tv_sec, $0.tv_nsec) < ($1.tv_sec, $1.tv_nsec) } ?? timespec()
        owner = (getuid(), getgid())
        readers = (0..<MountedFileSystem.readerStripes).map { _ in Locked([]) }
        self.maximumRead = maximumRead
        let persisted = PersistedCopies(inodes: tree.nodes.count)
        self.persisted = persisted
        let sources = checkpoint.files, made = self.made
        prefetcher = prefetch.map { options in
            Prefetcher(tree: tree, sourceSizes: sources.map(\.size), options: options,
                       targets: { inode, range in
                           if persisted.copy(inode) != nil {
                               return [.persisted(inode: inode, offset: range.lowerBound, count: range.count)]
                           }
                           guard let node = tree.node(inode), case let .file(file) = node.kind else { return [] }
                           return made.file(inode, file).sourceRanges(of: range).map { .source($0) }
                       },
                       advise: { target in
                           switch target {
                           case let .source(range):
                               sources[range.fileIndex].prefetch(range.offset..<range.end)
                           case let .persisted(inode, offset, count):
                               guard let handle = try? persisted.copy(inode)?.file.open() else { return }
                               _ = posix_fadvise(handle.descriptor.rawValue, off_t(offset), off_t(count), POSIX_FADV_WILLNEED)
                           }
                       })
        }
    }

    deinit { prefetcher?.stop() }

    /// A reader opened `inode` (prefetching starts for it).
    public func opened(_ inode: UInt64) { prefetcher?.opened(inode) }

    /// A reader closed `inode` (prefetching stops with its last reader).
    public func closed(_ inode: UInt64) { prefetcher?.closed(inode) }

    /// From now on, answers reads of the file at `path` (relative, as in the
    /// tree) from `copy`, a persisted file verified to hold its bytes.
    public func servePersisted(_ path: String, from copy: String) throws(ShardFSError) {
        guard let node = tree.node(path: path), case let .file(file) = node.kind else {
            throw ShardFSError.badSource(file: path, reason: "is not a file of this mount")
        }
        try persisted.adopt(node.inode, file: made.file(node.inode, file), path: copy)
    }

    /// `stat` of an inode, as the kernel is told it.
    public func attributes(_ inode: UInt64) -> stat? {
        guard let node = tree.node(inode) else { return nil }
        var s = stat()
        s.st_ino = UInt(node.inode)
        s.st_uid = owner.uid
        s.st_gid = owner.gid
        s.st_mtim = modificationTime
        s.st_ctim = modificationTime
        s.st_atim = modificationTime
        // The size stdio buffers reads by: small files (xser's tensor files)
        // are read through the page cache and mostly opened whole, where a
        // 1 MiB buffer made every seek-and-read of torch.load's zip reader
        // fill a megabyte (1.65 against 0.87 ms per file warm); large files
        // stream with direct_io, a request per read; a file whose maker says
        // how it is read (a DCP file's many archives) is buffered so.
        var preferred: Int?
        if case let .file(file) = node.kind { preferred = file.preferredReadSize }
        s.st_blksize = preferred ?? (node.size >= MountedFileSystem.streamingFileBytes ? 1 << 20 : 4096)
        if node.isDirectory {
            s.st_mode = S_IFDIR | 0o555
            s.st_nlink = UInt(2 + tree.subdirectoryCount(of: inode))
            s.st_size = 4096
        } else {
            s.st_mode = S_IFREG | 0o444
            s.st_nlink = 1
            s.st_size = node.size
            s.st_blocks = (node.size + 511) / 512
        }
        return s
    }

    /// The known problem with the sources of `inode`, if any (no system
    /// call: what reads, events and the sweep have found).
    public func sourceProblem(_ inode: UInt64) -> (source: String, problem: String)? {
        guard watch.anyBroken else { return nil }
        for index in sourcesOfInode[inode] ?? [] {
            if let problem = watch.problem(index) { return (watch.sources[index].name, problem) }
        }
        return nil
    }

    /// Inodes whose bytes come from source `index`.
    public func inodes(usingSource index: Int) -> [UInt64] {
        sourcesOfInode.filter { $0.value.contains(index) }.map(\.key).sorted()
    }

    public enum ReadError: Error, Equatable {
        case notFound, isDirectory
        case sourceChanged(source: String, problem: String)
        case io(ShardFSError)
    }

    /// Serves `count` bytes of `inode` from `offset`: calls `reply` with the
    /// segments and the buffer they refer to (valid only during the call).
    /// `allowSplice` (the kernel connection can splice) lets a persisted
    /// copy's bytes go as its descriptor, and sources' as `splicing` says.
    ///
    /// A source a request splices from is held in use until `reply` returns:
    /// a lease break waits for it. Every source read is checked after the
    /// copy and before the reply (`SourceWatch.check`): for a leased one that
    /// is a look at its lease, no system call (a break marks the source
    /// before the lease is let go, so a write that met a copy is caught);
    /// for an unleased one an fstat. Unleased spliced sources are checked
    /// again after the reply (`SourceSplicing`).
    public func read<R>(_ inode: UInt64, offset: Int, count: Int, allowSplice: Bool,
                        reply: ([ReadSegment], UnsafeMutableRawBufferPointer) -> R) -> Result<R, ReadError> {
        guard let node = tree.node(inode) else { return .failure(.notFound) }
        guard case let .file(file) = node.kind else { return .failure(.isDirectory) }
        if let (source, problem) = sourceProblem(inode) { return .failure(.sourceChanged(source: source, problem: problem)) }
        let wanted = min(count, maximumRead)
        prefetcher?.read(inode, offset: offset, count: wanted)
        // Thread ids are addresses a stack apart: hashed, not masked.
        let stripe = readers[Int(truncatingIfNeeded: (UInt64(pthread_self()) &* 0x9E37_79B9_7F4A_7C15) >> 60) % MountedFileSystem.readerStripes]
        let context = stripe.withLock { $0.popLast() } ?? ReadContext(sources: watch.sources, bufferSize: maximumRead)
        defer { stripe.withLock { $0.append(context) } }
        let buffer = UnsafeMutableRawBufferPointer(rebasing: context.buffer[0..<wanted])
        let range = offset..<offset + min(wanted, max(0, file.size - offset))
        do throws(ShardFSError) {
            if let copy = persisted.copy(inode) {
                let handle = try copy.file.open()
                let segments = try copy.segments(of: range, handle: handle, buffer: buffer, allowSplice: allowSplice)
                return .success(withExtendedLifetime(handle) { reply(segments, context.buffer) })
            }
            let reader = context.reader
            reader.startRequest(leases: splicing == .never ? nil : ReadLeases.shared)
            defer { reader.endRequest() }
            var splicedUnleased = false
            let splice: ((OpenSourceFile) -> Bool)? = !allowSplice || splicing == .never ? nil : { handle in
                if handle.holdsLease { return true }
                splicedUnleased = splicedUnleased || self.splicing == .always
                return self.splicing == .always
            }
            let segments = try reader.segments(of: made.file(inode, file), range: range, buffer: buffer, splice: splice)
            if let failure = checkSources(reader) { return .failure(failure) }
            let replied = reply(segments, context.buffer)
            if splicedUnleased { _ = checkSources(reader) }
            return .success(replied)
        } catch {
            if case let .sourceChanged(name, problem) = error, let index = watch.sources.firstIndex(where: { $0.name == name }) {
                // Found on reopening it: every file using it fails from now on.
                return .failure(.sourceChanged(source: name, problem: watch.check(index) ?? problem))
            }
            return .failure(.io(error))
        }
    }

    /// Checks the sources the request read: any write that reached bytes
    /// before they were copied broke the lease or changed the mtime first.
    private func checkSources(_ reader: ExtentReader) -> ReadError? {
        for (index, leased) in reader.requestSources {
            // Leased: a break marks the source before the lease is let go,
            // and no writer gets in before that; a lock-free look suffices.
            if let problem = leased ? watch.problem(index) : watch.check(index) {
                return .sourceChanged(source: watch.sources[index].name, problem: problem)
            }
        }
        return nil
    }

    /// How the sources are served so far (for `status`).
    public var sourceServing: MountStatus.SourceServing {
        let counts = splicing == .never ? (held: 0, refused: 0, broken: 0, refusedExamples: []) : ReadLeases.shared?.counts
        return MountStatus.SourceServing(splicing: splicing.rawValue, leased: counts?.held ?? 0, unleased: counts?.refused ?? 0,
                                         unleasedExamples: counts?.refusedExamples ?? [], leasesBroken: counts?.broken ?? 0)
    }

}
