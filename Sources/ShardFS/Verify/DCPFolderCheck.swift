import Foundation

/// `shardfs verify SRC FOLDER --format dcp`: a DCP folder against what the
/// plan of SRC says it must hold (docs/formats/dcp.md). Reads the folder as
/// DCP's loader does: its `.metadata` (every entry's kind, dtype and size),
/// each bytes item's value, and every tensor element bit for bit, whatever
/// chunks the folder stores them in (ShardFS's, or TorchTitan's own). The
/// folder's tensors are reached through the DCP source (`Source/DCP/`), so
/// they are compared in the plan's row order and chunks; nothing in the
/// folder is trusted but what a loader reads.
///
/// Verdicts are per TorchTitan parameter (its weight, its optimizer state,
/// its param group), then `lr_scheduler`, `train_state` and `.metadata`.
public struct DCPFolderCheck: Sendable {
    public let checkpoint: Checkpoint
    public let plan: LayoutPlan
    public let folder: String
    /// The model's config.json (or its directory), which the folder, like an
    /// NxD tag, does not hold.
    public let configPath: String?

    public init(checkpoint: Checkpoint, plan: LayoutPlan, folder: String, configPath: String?) throws(ShardFSError) {
        guard plan.dcp != nil else { throw ShardFSError.badLayout(flag: "--format", reason: "a DCP folder is checked with --format dcp") }
        self.checkpoint = checkpoint
        self.plan = plan
        self.folder = folder
        self.configPath = configPath
    }

    public func run(jobs: Int, chunkBytes: Int = Verifier.defaultChunkBytes,
                    events: @escaping @Sendable (VerifyEvent) -> Void = { _ in }) -> VerifyReport {
        let expected = plan.dcp!
        let groups = DCPFolderCheck.groups(expected.items)
        let tensorBytes = expected.items.reduce(0) { total, item in
            guard case let .tensor(t) = item.value else { return total }
            return total + t.shape.reduce(t.dtype.size, *)
        }
        events(.started(files: groups.count + 1, bytes: tensorBytes))
        let metadataPath = DCPPlan.metadataPath
        // The folder as DCP's loader sees it: its metadata, its values.
        let found: (metadata: DCPMetadata, checkpoint: Checkpoint, plan: DCPPlan)
        do throws(ShardFSError) {
            let bytes = try Checkpoint.readSmallFile(directory: folder, name: metadataPath, limit: DCPFolderCheck.metadataLimit)
            let metadata = try DCPMetadata.parse(bytes, file: metadataPath)
            let hasOptimizer = expected.items.contains { $0.fqn.hasPrefix("optimizer.") }
            let source = try Checkpoint.open(folder, options: SourceOptions(config: configPath, weightsOnly: !hasOptimizer))
            var options = plan.options
            options.dpSize = nil
            let foundPlan = try LayoutPlanner.plan(checkpoint: source, options: options)
            found = (metadata, source, foundPlan.dcp!)
        } catch {
            let verdict = FileVerdict(path: metadataPath, status: .unreadable,
                                      problems: [VerifyProblem(.unreadable, file: metadataPath, "\(error)")])
            events(.finished(index: 0, verdict: verdict))
            return VerifyReport(files: [verdict], hints: [], bytes: tensorBytes)
        }

        let metadataVerdict = FileVerdict(path: metadataPath, problems: DCPFolderCheck.entryProblems(expected: expected.metadata, found: found.metadata))
        events(.finished(index: 0, verdict: metadataVerdict))
        let foundItems = Dictionary(found.plan.items.enumerated().map { ($0.element.fqn, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let locations = Dictionary(found.metadata.locations.filter { $0.chunkOffsets == nil }.map { ($0.fqn, $0) }, uniquingKeysWith: { a, _ in a })
        let folderFiles = Dictionary(found.checkpoint.files.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let verdicts = Locked([FileVerdict?](repeating: nil, count: groups.count))
        let (sources, foundSources, folder) = (checkpoint.files, found.checkpoint.files, self.folder)
        try? WorkerPool.run(items: groups.count, workers: jobs, makeState: {
            (ExtentReader(sources: sources), ExtentReader(sources: foundSources), ComparisonBuffers(chunkBytes: chunkBytes))
        }) { (state: inout (ExtentReader, ExtentReader, ComparisonBuffers), index: Int) throws(ShardFSError) in
            var problems: [VerifyProblem] = []
            for itemIndex in groups[index].items {
                let item = expected.items[itemIndex]
                switch item.value {
                case let .bytes(want):
                    guard let location = locations[item.fqn], let file = folderFiles[location.relativePath] else { continue }
                    do throws(ShardFSError) {
                        let got = try TorchSaveReader.plainValue(file: location.relativePath, at: location.offset, length: location.length) {
                            (offset, count) throws(ShardFSError) in try file.readBytes(at: offset, count: count)
                        }
                        if got != want {
                            problems.append(VerifyProblem(.wrongValues, file: location.relativePath, key: item.fqn,
                                                          "\(item.fqn) is \(PickleValue.python(got)), the plan wants \(PickleValue.python(want))"))
                        }
                    } catch {
                        problems.append(VerifyProblem(.unreadable, file: location.relativePath, key: item.fqn, "\(error)"))
                    }
                case let .tensor(want):
                    guard let other = foundItems[item.fqn], case let .tensor(got) = found.plan.items[other].value,
                          got.dtype == want.dtype, got.shape == want.shape else { continue }  // said by .metadata's verdict
                    for chunk in want.chunks.indices {
                        let count = expected.description(want, chunk).elementCount * want.dtype.size
                        let wantFile = VirtualFile(extents: expected.storage(want, chunk))
                        let gotFile = VirtualFile(extents: found.plan.storage(got, chunk))
                        var crc: RecordCRC?
                        do throws(StreamReadFailure) {
                            let (expectedReader, foundReader, buffers) = state
                            if let d = try StreamComparison.firstDifference(
                                byteCount: count, dtype: want.dtype, buffers: buffers,
                                expected: { (range, out) throws(ShardFSError) in _ = try expectedReader.read(wantFile, at: range.lowerBound, into: out) },
                                found: { (range, out) throws(ShardFSError) in _ = try foundReader.read(gotFile, at: range.lowerBound, into: out) },
                                crc: &crc, progress: { events(.checked(bytes: $0)) }) {
                                let rowElements = want.shape.dropFirst().reduce(1, *)
                                let index = (want.shape.isEmpty ? 0 : want.chunks[chunk].lowerBound * rowElements) + d.index
                                let value = ValueDifference(index: index, shape: want.shape, expected: d.expected, found: d.found)
                                problems.append(VerifyProblem(.wrongValues, file: folder, key: item.fqn, "\(item.fqn) differs at \(value.description)",
                                                              difference: value))
                                break
                            }
                        } catch {
                            let kind: VerifyProblem.Kind = error.side == .expected ? .sourceError : .unreadable
                            problems.append(VerifyProblem(kind, file: folder, key: item.fqn, "\(error.error)"))
                            break
                        }
                    }
                }
            }
            let verdict = FileVerdict(path: groups[index].name, problems: problems)
            verdicts.withLock { $0[index] = verdict }
            events(.finished(index: index + 1, verdict: verdict))
        }
        let all = [metadataVerdict] + verdicts.withLock { $0 }.enumerated().map { index, verdict in
            verdict ?? FileVerdict(path: groups[index].name, status: .unreadable,
                                   problems: [VerifyProblem(.unreadable, file: folder, "not checked")])
        }
        return VerifyReport(files: all, hints: [], bytes: tensorBytes)
    }

    /// The largest `.metadata` read (a 405B training state's is tens of MB).
    static let metadataLimit = 1 << 30

    /// Items by what a user thinks of: a parameter with its optimizer state
    /// and param group; the LR scheduler; the train state.
    static func groups(_ items: [DCPPlan.Item]) -> [(name: String, items: [Int])] {
        var order: [String] = []
        var members: [String: [Int]] = [:]
        for (index, item) in items.enumerated() {
            let name: String
            if item.fqn.hasPrefix("optimizer.state.") || item.fqn.hasPrefix("optimizer.param_groups.") {
                let rest = item.fqn.split(separator: ".", maxSplits: 2).last.map(String.init) ?? item.fqn
                name = String(rest[..<(rest.lastIndex(of: ".") ?? rest.endIndex)])
            } else if item.fqn.hasPrefix("lr_scheduler.") || item.fqn.hasPrefix("train_state.") {
                name = String(item.fqn.split(separator: ".").first!)
            } else {
                name = item.fqn
            }
            if members[name] == nil { order.append(name) }
            members[name, default: []].append(index)
        }
        return order.map { ($0, members[$0]!) }
    }

    /// `.metadata`'s entries against the plan's: each present, of its kind,
    /// dtype and size; none more (a run's `dataloader.*` aside, which
    /// TorchTitan skips with `exclude_from_loading`). Chunks may differ: a
    /// loader reads any.
    static func entryProblems(expected: DCPMetadata, found: DCPMetadata) -> [VerifyProblem] {
        let file = DCPPlan.metadataPath
        let got = Dictionary(found.entries.map { ($0.fqn, $0.entry) }, uniquingKeysWith: { a, _ in a })
        var problems: [VerifyProblem] = []
        for (fqn, want) in expected.entries {
            guard let entry = got[fqn] else {
                problems.append(VerifyProblem(.missingKey, file: file, key: fqn, "\(fqn) is missing"))
                continue
            }
            switch (want, entry) {
            case (.bytes, .bytes): break
            case let (.tensor(w), .tensor(g)):
                if w.dtype != g.dtype {
                    problems.append(VerifyProblem(.wrongDType, file: file, key: fqn, "\(fqn) is stored as \(g.dtype.rawValue), the plan wants \(w.dtype.rawValue) (DCP would convert it without a word)"))
                } else if w.size != g.size {
                    problems.append(VerifyProblem(.wrongShape, file: file, key: fqn, "\(fqn) has size \(g.size), the plan wants \(w.size)"))
                }
            default:
                problems.append(VerifyProblem(.wrongShape, file: file, key: fqn, "\(fqn) is \(entry.kindName), the plan wants \(want.kindName)"))
            }
        }
        let wanted = Set(expected.entries.map(\.fqn))
        for (fqn, _) in found.entries where !wanted.contains(fqn) && fqn != "dataloader" && !fqn.hasPrefix("dataloader.") {
            problems.append(VerifyProblem(.extraKey, file: file, key: fqn, "\(fqn) is not in the plan"))
        }
        return problems
    }
}

extension DCPMetadata.Entry {
    var kindName: String {
        switch self {
        case .tensor: return "a tensor"
        case .bytes: return "a bytes item"
        }
    }
}

extension PickleValue {
    /// A plain value as Python's repr prints it.
    public static func python(_ v: PickleValue) -> String {
        switch v {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .float(let f): return String(f)
        case .string(let s): return "'\(s)'"
        case .list(let items): return "[" + items.map(python).joined(separator: ", ") + "]"
        case .tuple(let items): return "(" + items.map(python).joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
        default: return v.kindName
        }
    }
}
