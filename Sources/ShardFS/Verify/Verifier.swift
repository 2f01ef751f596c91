import Foundation

/// What a check reports as it goes, for a progress display.
public enum VerifyEvent: Sendable {
    /// `bytes`: the tensor bytes of the files to check.
    case started(files: Int, bytes: Int)
    case checked(bytes: Int)
    /// The verdict on rank file `index` of the part (in plan order).
    case finished(index: Int, verdict: FileVerdict)
}

/// `shardfs verify`: every rank file a layout names, as a directory holds it
/// (TAG/model/, plain or xser), against the layout's plan over the source,
/// streaming both sides in chunks: keys and their order, dtypes, shapes,
/// every element bit for bit, the zip CRC-32s; KV heads named when grouped
/// wrongly. `jobs` files at once; nothing in TAG is trusted but the bytes a
/// loader reads (no `done` marker, no `.shardfs/` manifest is consulted).
public struct Verifier: Sendable {
    public struct Options: Sendable {
        public var jobs: Int
        public var part: Part
        /// Bytes compared per read on each side.
        public var chunkBytes: Int
        /// The model's config (a file, or a directory holding config.json),
        /// to infer TAG's own layout when it is another one (for the hint).
        public var configPath: String?

        public init(jobs: Int = 1, part: Part = .whole, chunkBytes: Int = Verifier.defaultChunkBytes, configPath: String? = nil) {
            self.jobs = jobs
            self.part = part
            self.chunkBytes = chunkBytes
            self.configPath = configPath
        }
    }

    /// 512 KiB: both buffers stay in L2, where the comparison and the CRC find
    /// them (on the 1B bench tree, 512 KiB took 0.25 s of user time, 2 MiB 0.4 s).
    public static let defaultChunkBytes = 512 << 10

    public let checkpoint: Checkpoint
    public let plan: LayoutPlan
    public let tag: String

    public init(checkpoint: Checkpoint, plan: LayoutPlan, tag: String) throws(ShardFSError) {
        guard plan.options.format != .hf else {
            throw ShardFSError.badLayout(flag: "--format hf", reason: "verify checks NxD rank files (pt or xser), not a Hugging Face checkpoint")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: tag, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ShardFSError.badSource(file: tag, reason: "no such directory (TAG is the checkpoint tag directory, the one holding model/)")
        }
        self.checkpoint = checkpoint
        self.plan = plan
        self.tag = tag
    }

    public func run(options: Options, events: @escaping @Sendable (VerifyEvent) -> Void = { _ in }) -> VerifyReport {
        let files = options.part.select(plan.files)
        // A training tag's optimizer files go with their rank file's share.
        let ranks = Set(files.map { [$0.tpRank, $0.ppRank] })
        let optimizerFiles = plan.optimizer?.files.filter { ranks.contains([$0.tpRank, $0.ppRank]) } ?? []
        let plannedBytes = files.map { $0.tensors.reduce(0) { $0 + $1.byteCount } } + optimizerFiles.map(OptimizerFileCheck.plannedBytes)
        let carried = options.part.index == 0 ? plan.optimizer?.state.carried.count ?? 0 : 0
        events(.started(files: files.count + optimizerFiles.count + carried, bytes: plannedBytes.reduce(0, +)))
        var verdicts = check(files, optimizerFiles, plannedBytes: plannedBytes, options: options, events: events)
        if let optimizer = plan.optimizer, options.part.index == 0 {
            for verdict in carriedVerdicts(optimizer.state) {
                events(.finished(index: verdicts.count, verdict: verdict))
                verdicts.append(verdict)
            }
        }

        let listing = TagListing(tag: tag, plan: plan)
        // Entries that belong to no rank file are reported by part 0 alone,
        // so that the parts of a split check report each once.
        let extras = options.part.index == 0 ? listing.extras : []
        var hints: [String] = []
        if !(verdicts + extras).allSatisfy({ $0.status == .ok }) {
            hints = listing.hints
            if hints.isEmpty, let configPath = options.configPath, let other = listing.otherLayout(configPath: configPath) {
                hints.append(other)
            }
        }
        return VerifyReport(files: verdicts + extras, hints: hints, bytes: plannedBytes.reduce(0, +))
    }

    /// The verdicts on `files`, `options.jobs` at a time, in plan order.
    private func check(_ files: [RankFile], _ optimizerFiles: [OptimizerFile], plannedBytes: [Int], options: Options,
                       events: @escaping @Sendable (VerifyEvent) -> Void) -> [FileVerdict] {
        let count = files.count + optimizerFiles.count
        let verdicts = Locked([FileVerdict?](repeating: nil, count: count))
        let (checkpoint, plan, tag) = (self.checkpoint, self.plan, self.tag)
        // Checks never throw: what they find is in their verdicts.
        try? WorkerPool.run(items: count, workers: options.jobs, makeState: { () -> (CheckContext, Locked<Int>) in
            let counted = Locked(0)
            let context = CheckContext(tag: tag, checkpoint: checkpoint, layout: plan.options, chunkBytes: options.chunkBytes) { bytes in
                counted.withLock { $0 += bytes }
                events(.checked(bytes: bytes))
            }
            return (context, counted)
        }) { (state: inout (CheckContext, Locked<Int>), index: Int) throws(ShardFSError) in
            let (context, counted) = state
            counted.withLock { $0 = 0 }
            let verdict = index >= files.count
                ? OptimizerFileCheck(context: context, file: optimizerFiles[index - files.count], state: plan.optimizer!.state).run()
                : plan.options.format == .xser
                ? XserGroupCheck(context: context, rankFile: files[index]).run()
                : PlainRankFileCheck(context: context, rankFile: files[index]).run()
            // Files not compared in full still count as done.
            let rest = plannedBytes[index] - counted.withLock { $0 }
            if rest > 0 { events(.checked(bytes: rest)) }
            verdicts.withLock { $0[index] = verdict }
            events(.finished(index: index, verdict: verdict))
        }
        return verdicts.withLock { $0.map { $0! } }
    }

    /// The files a training tag carries as they are (scheduler.pt, ...): byte for byte the source's.
    private func carriedVerdicts(_ state: TrainingState) -> [FileVerdict] {
        state.carried.map { carried in
            guard CheckContext.exists(tag + "/" + carried.path) else { return .missing(carried.path) }
            do throws(ShardFSError) {
                let file = try SourceFile(directory: tag, name: carried.path)
                let bytes = file.size == carried.bytes.count ? try file.readBytes(at: 0, count: file.size) : []
                let same = file.size == carried.bytes.count && bytes == carried.bytes
                return FileVerdict(path: carried.path, problems: same ? [] : [
                    VerifyProblem(.wrongValues, file: carried.path, "differs from the source's \(carried.path) (\(carried.bytes.count) bytes): it is carried as it is"),
                ])
            } catch {
                return FileVerdict(path: carried.path, status: .unreadable,
                                   problems: [VerifyProblem(.unreadable, file: carried.path, CheckContext.reason(error, file: carried.path))])
            }
        }
    }
}
