import Foundation

/// What a conversion reports as it goes, for a progress display.
public enum ConvertEvent: Sendable {
    /// With `force`: a file of another layout removed from OUT.
    case removed(path: String)
    /// Files OUT's manifest records as finished, being read back to check them.
    case checking(files: Int, bytes: Int)
    /// A file recorded as finished that is not what its entry says: rewritten.
    case rewriting(path: String, reason: String)
    /// Writing starts: `files` to write, `kept` found finished and intact.
    case started(files: Int, bytes: Int, keptFiles: Int, keptBytes: Int)
    case wrote(bytes: Int)
    case finished(path: String, bytes: Int)
}

/// `shardfs convert`: writes the files of a plan to a directory, `jobs`
/// files at a time, each through `VirtualFileWriter` (so each is complete
/// under its final name or absent), and records each in OUT's manifest
/// (`PersistManifest`, as `mount --persist-to` does): OUT is taken for the
/// layout by `TargetDirectory` (another layout or source refused unless
/// `force`), and a run on an OUT already finished or half finished keeps
/// the files whose size and CRC-32 match their entries and writes the rest.
public struct Converter: Sendable {
    public let checkpoint: Checkpoint
    public let plan: LayoutPlan

    public init(checkpoint: Checkpoint, plan: LayoutPlan) {
        self.checkpoint = checkpoint
        self.plan = plan
    }

    /// What a run did.
    public struct Outcome: Equatable, Sendable {
        public var writtenFiles = 0, writtenBytes = 0
        public var keptFiles = 0, keptBytes = 0
        public var removed: [String] = []
    }

    /// Writes the files of share `part` of the plan (all of it by default;
    /// in the plan's format) under `root`, creating the directories
    /// they need, and keeps those finished before (checked by CRC-32).
    /// Stops at the first error, removing unfinished temporaries. Refuses a
    /// `root` holding another layout or source, unless `force`.
    @discardableResult
    public func run(root: String, part: Part = .whole, jobs: Int, force: Bool = false,
                    isCancelled: @escaping @Sendable () -> Bool = { false },
                    events: @escaping @Sendable (ConvertEvent) -> Void = { _ in }) throws(ShardFSError) -> Outcome {
        let outputs = try plan.virtualFiles(part: part)
        // Every path of the layout (all --part shares), to tell another
        // layout's files from those of the other shares.
        let planned = PathSet(part == .whole ? outputs : plan.virtualFiles())
        let fingerprints = try checkpoint.fingerprints()
        let target = TargetDirectory(directory: root, naming: .out(root))
        let prepared = try target.prepare(layout: PersistManifest.Layout(layout: plan.options.summary, sources: fingerprints),
                                          family: TargetFamily(plan.options.format), planned: planned, mine: PathSet(outputs),
                                          sources: checkpoint.files, force: force)
        var outcome = Outcome()
        outcome.removed = prepared.removed
        for path in prepared.removed { events(.removed(path: path)) }

        let kept = try Converter.keepFinished(outputs, finished: prepared.finished, root: root, manifest: target.manifest,
                                              jobs: jobs, isCancelled: isCancelled, events: events)
        // By index: an xser training state is 350,000 outputs, a copy of
        // their list 17 MB.
        let remaining = outputs.indices.filter { !kept.contains($0) }
        outcome.keptFiles = kept.count
        outcome.keptBytes = kept.reduce(0) { $0 + outputs[$1].file.size }
        outcome.writtenFiles = remaining.count
        outcome.writtenBytes = remaining.reduce(0) { $0 + outputs[$1].file.size }
        let topLevel = plan.options.format == .hf || plan.options.format == .dcp
        let created = try target.makeDirectories(for: remaining.lazy.map { outputs[$0].path }, top: topLevel ? "" : "model")
        events(.started(files: remaining.count, bytes: outcome.writtenBytes, keptFiles: outcome.keptFiles, keptBytes: outcome.keptBytes))
        do throws(ShardFSError) {
            try write(outputs, remaining, root: root, manifest: target.manifest, jobs: jobs, isCancelled: isCancelled, events: events)
            if part != .whole {
                outcome.writtenFiles += try completeShares(root: root, manifest: target.manifest, events: events)
            }
        } catch {
            // Leave no empty `p.tensors` folder behind: the trainer takes a tag
            // holding one for xser.
            for directory in created.reversed() { rmdir(directory) }
            throw error
        }
        return outcome
    }

    /// A `--part` share cannot know when the others finish, so none is told
    /// to write the completion markers (`done`, `.metadata`); the share that
    /// finds every other file of the whole plan finished (recorded in the
    /// manifest the shares share, at its planned size) writes them, last.
    /// Two shares finishing at once may both: the markers' bytes are the
    /// same and each appears by rename. Returns the markers written.
    private func completeShares(root: String, manifest: PersistManifest,
                                events: @escaping @Sendable (ConvertEvent) -> Void) throws(ShardFSError) -> Int {
        let whole = plan.virtualFiles()
        let markers = whole.indices.filter { LayoutPlan.isCompletionMarker(whole[$0].path) }
        guard !markers.isEmpty else { return 0 }
        let finished = Dictionary(try manifest.finished().map { ($0.path, $0) }, uniquingKeysWith: { $1 })
        for (path, file) in whole where !LayoutPlan.isCompletionMarker(path) {
            guard let entry = finished[path], entry.problem(in: root, plannedSize: file.size) == nil else { return 0 }
        }
        try writeAtOnce(whole, markers, root: root, manifest: manifest, jobs: 1, isCancelled: { false }, events: events)
        return markers.count
    }

    /// The indices of `outputs` recorded as finished whose file has the
    /// recorded size and CRC-32 (read back, `jobs` files at a time, in
    /// bounded memory); the entries of the others are forgotten (they are
    /// rewritten).
    static func keepFinished(_ outputs: PlannedFiles, finished: [String: PersistManifest.FinishedFile],
                             root: String, manifest: PersistManifest, jobs: Int,
                             isCancelled: @escaping @Sendable () -> Bool,
                             events: @escaping @Sendable (ConvertEvent) -> Void) throws(ShardFSError) -> Set<Int> {
        var candidates: [(index: Int, entry: PersistManifest.FinishedFile)] = []
        for (index, output) in outputs.enumerated() {
            guard let entry = finished[output.path] else { continue }
            if let problem = entry.problem(in: root, plannedSize: output.file.size) {
                manifest.forget(output.path)
                events(.rewriting(path: output.path, reason: problem))
            } else {
                candidates.append((index, entry))
            }
        }
        guard !candidates.isEmpty else { return [] }
        let checks = candidates
        events(.checking(files: checks.count, bytes: checks.reduce(0) { $0 + $1.entry.size }))
        let kept = Locked(Set<Int>())
        // A file that does not check out is rewritten, not an error: items never throw.
        try WorkerPool.run(items: checks.count, workers: jobs, isCancelled: isCancelled,
                           makeState: { UnsafeMutableRawBufferPointer.allocate(byteCount: FileChecksum.bufferSize, alignment: 4096) },
                           finish: { $0.deallocate() }) { (buffer: inout UnsafeMutableRawBufferPointer, item: Int) throws(ShardFSError) in
            let (index, entry) = checks[item]
            let path = outputs[index].path
            do throws(ShardFSError) {
                let crc = try FileChecksum.crc32(of: root + "/" + path, expectedSize: entry.size, buffer: buffer, isCancelled: isCancelled)
                if crc == entry.crc32 {
                    kept.withLock { _ = $0.insert(index) }
                    return
                }
                events(.rewriting(path: path, reason: String(format: "its CRC-32 is %08x, its entry says %08x", crc, entry.crc32)))
            } catch {
                if isCancelled() { return }
                events(.rewriting(path: path, reason: "\(error)"))
            }
            manifest.forget(path)
        }
        if isCancelled() { throw ShardFSError.io(path: root, operation: "check (interrupted)", errno: EINTR) }
        return kept.withLock { $0 }
    }

    /// Writes `outputs` under `root`, `jobs` files at a time, recording each
    /// in `manifest` once it is complete under its final name. A completion
    /// marker (a training tag's `done`, as NxD's `save_checkpoint` writes it;
    /// a DCP folder's `.metadata`, as DCP's `finish` does) is written after
    /// every other file: an output is complete once it exists, so a run
    /// interrupted earlier leaves one no trainer takes for complete.
    private func write(_ outputs: PlannedFiles, _ chosen: [Int], root: String, manifest: PersistManifest, jobs: Int,
                       isCancelled: @escaping @Sendable () -> Bool,
                       events: @escaping @Sendable (ConvertEvent) -> Void) throws(ShardFSError) {
        let markers = chosen.filter { LayoutPlan.isCompletionMarker(outputs[$0].path) }
        try writeAtOnce(outputs, chosen.filter { !LayoutPlan.isCompletionMarker(outputs[$0].path) }, root: root, manifest: manifest,
                        jobs: jobs, isCancelled: isCancelled, events: events)
        try writeAtOnce(outputs, markers, root: root, manifest: manifest, jobs: 1, isCancelled: isCancelled, events: events)
    }

    /// Writes `outputs[i]` for each i of `chosen`.
    private func writeAtOnce(_ outputs: PlannedFiles, _ chosen: [Int], root: String, manifest: PersistManifest, jobs: Int,
                             isCancelled: @escaping @Sendable () -> Bool,
                             events: @escaping @Sendable (ConvertEvent) -> Void) throws(ShardFSError) {
        guard !chosen.isEmpty else { return }
        let failed = Locked(false)
        let sources = checkpoint.files
        try WorkerPool.run(items: chosen.count, workers: jobs, makeState: { VirtualFileWriter(reader: ExtentReader(sources: sources)) },
                           finish: { $0.close() }) { (writer: inout VirtualFileWriter, item: Int) throws(ShardFSError) in
            let (path, file) = outputs[chosen[item]]
            do throws(ShardFSError) {
                let crc = try writer.write(file.make(), to: root + "/" + path,
                                           progress: { events(.wrote(bytes: $0)) },
                                           // The other writers stop mid-file once one failed.
                                           isCancelled: { isCancelled() || failed.withLock { $0 } })
                try manifest.recordFinished(.init(path: path, size: file.size, crc32: crc))
                events(.finished(path: path, bytes: file.size))
            } catch {
                failed.withLock { $0 = true }
                throw error
            }
        }
    }
}
