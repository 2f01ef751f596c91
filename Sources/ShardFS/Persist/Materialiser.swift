import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The background materialiser of `shardfs mount --persist-to DIR`: writes
/// files of the mount to DIR with the writer `shardfs convert` uses (so each
/// is byte-identical to convert's, and complete under its final name or
/// absent), records each in DIR's manifest, reads it back to verify it, and
/// then tells the mount it may serve that file from DIR.
///
/// Reads through the mount keep priority: before each chunk it waits while
/// readers are active (up to a second, so it never starves), and it can be
/// held to a bandwidth.
public final class Materialiser: Sendable {
    public struct Options: Sendable {
        public var directory: String
        public var part: Part = .whole
        /// Files written at once.
        public var jobs = 1
        /// Bytes per second, all jobs together; nil for no limit.
        public var bandwidth: Int?
        /// Replace what DIR holds if it is another layout or source.
        public var force = false
        /// The layout DIR is claimed for (the plan's summary and the format).
        public var layout: String
        /// Every path of the whole layout (all parts), to find files of
        /// another layout in DIR; nil: `files` when `part` is whole, else
        /// unknown (then only DIR's manifest is compared).
        public var plannedPaths: [String]?

        public init(directory: String, layout: String) {
            self.directory = directory
            self.layout = layout
        }
    }

    public let options: Options
    /// This part's files, at their paths relative to DIR.
    public let files: [(path: String, file: PlannedFile)]
    private let checkpoint: Checkpoint
    private var sources: [SourceFile] { checkpoint.files }
    private let target: TargetDirectory
    private var manifest: PersistManifest { target.manifest }
    private let logger: Logger
    private let readersActive: @Sendable () -> Bool
    private let verified: @Sendable (_ path: String, _ copy: String) -> Void
    private let state: Locked<MaterialiserStatus>
    /// Files found finished in DIR at `prepare` (kept as they are): index in
    /// `files` and the CRC-32 their manifest entry records.
    private let resumed = Locked<[(index: Int, crc32: UInt32)]>([])
    private let cancelled = Locked(false)
    /// The thread that writes (and starts the writers), one of `WorkerPool`'s.
    private let background = WorkerPool.Threads()
    private let pacing = Locked<(start: Double, bytes: Int)>((0, 0))

    /// `readersActive` tells whether the mount is serving reads right now;
    /// `verified` is called with the path (relative, as in `files`) and the
    /// copy's full path of each file persisted and read back intact.
    public init(checkpoint: Checkpoint, files: some Collection<(path: String, file: PlannedFile)>, options: Options, logger: Logger,
                readersActive: @escaping @Sendable () -> Bool,
                verified: @escaping @Sendable (_ path: String, _ copy: String) -> Void) {
        self.options = options
        self.files = Array(files)
        self.checkpoint = checkpoint
        target = TargetDirectory(directory: options.directory, naming: .persistTo(options.directory))
        self.logger = logger
        self.readersActive = readersActive
        self.verified = verified
        var status = MaterialiserStatus(directory: options.directory, part: options.part.description)
        status.filesTotal = files.count
        status.bytesTotal = files.reduce(0) { $0 + $1.file.size }
        state = Locked(status)
    }

    public var status: MaterialiserStatus { state.withLock { $0 } }

    /// Stopped by `stop` or by a failure: polled between chunks.
    private var isCancelled: Bool { cancelled.withLock { $0 } }

    /// Claims DIR for this layout as `shardfs convert` claims its OUT
    /// (`TargetDirectory`: refusing another layout or source, or files of
    /// another layout, unless `force`, which removes them), removes what a
    /// killed writer of this part left (temporaries; files without a
    /// manifest entry are rewritten), and finds the files already finished.
    /// Synchronous, so that a refusal reaches the user before mounting.
    public func prepare() throws(ShardFSError) {
        let fingerprints = try checkpoint.fingerprints()
        let family: TargetFamily = files.allSatisfy { $0.path.hasPrefix("model/") } ? .rankFiles : .huggingFace
        let prepared = try target.prepare(layout: PersistManifest.Layout(layout: options.layout, sources: fingerprints), family: family,
                                          planned: (options.plannedPaths ?? (options.part == .whole ? files.map(\.path) : nil)).map { PathSet($0) },
                                          mine: PathSet(files.map(\.path)), sources: sources, force: options.force)
        for path in prepared.removed { logger.info("removed \(path), of another layout") }
        let finished = prepared.finished
        var kept: [(index: Int, crc32: UInt32)] = []
        var keptBytes = 0
        for (index, (path, file)) in files.enumerated() {
            guard let entry = finished[path] else { continue }
            if let problem = entry.problem(in: options.directory, plannedSize: file.size) {
                logger.info("\(path): \(problem); rewriting it")
                manifest.forget(path)
            } else {
                kept.append((index, entry.crc32))
                keptBytes += file.size
            }
        }
        resumed.withLock { $0 = kept }
        state.withLock {
            $0.filesDone = kept.count
            $0.filesResumed = kept.count
            $0.bytesDone = keptBytes
        }
    }

    /// Starts writing in the background: the files not kept from before,
    /// `options.jobs` at a time, then a read-back of the kept ones.
    public func start() {
        pacing.withLock { $0 = (Monotonic.seconds, 0) }
        let kept = Set(resumed.withLock { $0.map(\.index) })
        // A completion marker (a training tag's `done`, a DCP folder's
        // `.metadata`) last, once every other file is persisted (as NxD and
        // DCP write them): a crash leaves no output marked complete.
        let pending = files.indices.filter { !kept.contains($0) && !LayoutPlan.isCompletionMarker(files[$0].path) }
        let markers = files.indices.filter { !kept.contains($0) && LayoutPlan.isCompletionMarker(files[$0].path) }
        logger.info("persisting \(files.count) files (part \(options.part)) to \(options.directory): \(status.summary)")
        background.start(1) { [self] in
            let sources = self.sources
            // The directories first, each durable in its parent, as convert makes them.
            do throws(ShardFSError) {
                _ = try target.makeDirectories(for: (pending + markers).map { files[$0].path }, top: "")
            } catch {
                fail("\(error)")
                return
            }
            do throws(ShardFSError) {
                for batch in [pending, markers] where !batch.isEmpty {
                    try WorkerPool.run(items: batch.count, workers: options.jobs, isCancelled: { [self] in isCancelled },
                                       makeState: { VirtualFileWriter(reader: ExtentReader(sources: sources)) },
                                       finish: { $0.close() }) { [self] (writer: inout VirtualFileWriter, item: Int) throws(ShardFSError) in
                        // A failure has stopped the materialiser (and said why).
                        guard persist(batch[item], writer: writer) else {
                            throw ShardFSError.io(path: options.directory, operation: "persist", errno: ECANCELED)
                        }
                    }
                }
            } catch {
                return
            }
            guard !isCancelled else { return }
            let writer = VirtualFileWriter(reader: ExtentReader(sources: sources))
            defer { writer.close() }
            verifyResumed(writer: writer)
        }
    }

    /// Stops the writers (an unfinished file's temporary is removed) and waits.
    public func stop() {
        cancelled.withLock { $0 = true }
        background.wait()
        state.withLock { if $0.state == .writing || $0.state == .verifying { $0.state = .stopped } }
    }

    /// Waits until the materialiser has finished (done, failed or stopped).
    public func wait() { background.wait() }

    /// Writes, records and verifies one file; false when it failed (and the
    /// materialiser is stopped).
    private func persist(_ index: Int, writer: VirtualFileWriter) -> Bool {
        let (path, file) = files[index]
        let target = options.directory + "/" + path
        do throws(ShardFSError) {
            manifest.forget(path)
            let crc = try writer.write(file.make(), to: target, progress: { count in wrote(count) }, pace: { pace() },
                                       isCancelled: { isCancelled })
            try manifest.recordFinished(.init(path: path, size: file.size, crc32: crc))
            state.withLock { $0.filesDone += 1 }
            try verify(index, crc: crc, buffer: writer)
            logProgress(finished: path)
            return true
        } catch {
            if isCancelled { return false }
            fail("\(target): \(error)")
            return false
        }
    }

    /// Reads a persisted file back; if it matches, the mount may serve it.
    private func verify(_ index: Int, crc: UInt32, buffer writer: VirtualFileWriter) throws(ShardFSError) {
        let (path, file) = files[index]
        let target = options.directory + "/" + path
        let actual = try writer.withChunkBuffer { (buffer) throws(ShardFSError) in
            try FileChecksum.crc32(of: target, expectedSize: file.size, buffer: buffer)
        }
        guard actual == crc else {
            manifest.forget(path)
            throw ShardFSError.badSource(file: target, reason: String(format: "reads back with CRC-32 %08x, written as %08x (storage corrupting data?)", actual, crc))
        }
        verified(path, target)
        state.withLock { $0.filesServedFromDirectory += 1 }
    }

    /// Files kept from an earlier run are verified last (a read pass each):
    /// until then they are served from the sources like any other.
    private func verifyResumed(writer: VirtualFileWriter) {
        let kept = resumed.withLock { $0 }
        guard state.withLock({ $0.state == .writing }) else { return }
        state.withLock { $0.state = .verifying }
        for (index, crc) in kept where !isCancelled {
            let path = files[index].path
            do throws(ShardFSError) {
                try verify(index, crc: crc, buffer: writer)
            } catch {
                // Not what was recorded: rewrite it now.
                logger.warning("\(path): \(error); rewriting it")
                state.withLock { $0.filesDone -= 1; $0.bytesDone -= files[index].file.size }
                guard persist(index, writer: writer) else { return }
            }
        }
        state.withLock {
            if $0.state == .verifying, !isCancelled {
                $0.state = .done
                $0.etaSeconds = 0
                $0.backingOff = false
            }
        }
        if status.state == .done { logger.info("persisted every file of part \(options.part) to \(options.directory): \(status.summary)") }
    }

    private func wrote(_ count: Int) {
        let now = Monotonic.seconds
        let (start, bytes) = pacing.withLock { $0.bytes += count; return ($0.start, $0.bytes) }
        state.withLock {
            $0.bytesDone += count
            let elapsed = now - start
            if elapsed > 0.5 {
                $0.bytesPerSecond = Double(bytes) / elapsed
                $0.etaSeconds = Double($0.bytesTotal - $0.bytesDone) / max($0.bytesPerSecond, 1)
            }
        }
    }

    /// Before each chunk: yield to readers (up to a second), then hold the
    /// bandwidth limit.
    private func pace() {
        var waited = 0
        while readersActive(), waited < 10, !isCancelled {
            state.withLock { $0.backingOff = true }
            usleep(100_000)
            waited += 1
        }
        if waited == 0 { state.withLock { $0.backingOff = false } }
        guard let bandwidth = options.bandwidth, bandwidth > 0 else { return }
        let (start, bytes) = pacing.withLock { ($0.start, $0.bytes) }
        let due = start + Double(bytes) / Double(bandwidth)
        let ahead = due - Monotonic.seconds
        if ahead > 0 { usleep(useconds_t(min(ahead, 1) * 1e6)) }
    }

    private let lastLog = Locked<Double>(0)

    private func logProgress(finished path: String) {
        let now = Monotonic.seconds
        let due = lastLog.withLock { last in
            guard now - last >= 10 else { return false }
            last = now
            return true
        }
        let status = self.status
        if due || status.filesDone == status.filesTotal { logger.info("persisted \(path): \(status.summary)") }
        else { logger.debug("persisted \(path)") }
    }

    private func fail(_ message: String) {
        let first = state.withLock { status -> Bool in
            guard status.state != .failed else { return false }
            status.state = .failed
            status.lastError = message
            status.backingOff = false
            status.etaSeconds = nil
            return true
        }
        cancelled.withLock { $0 = true }
        if first { logger.error("materialiser stopped: \(message); the mount keeps serving from the sources") }
    }
}
