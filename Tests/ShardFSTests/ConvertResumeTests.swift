import Foundation
import Logging
import Synchronization
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// `convert` and `--persist-to` take a directory for a layout the same way
/// (`TargetDirectory`): what is refused, what `--force` removes, and what a
/// second run keeps. The decisions are checked against expectations written
/// by hand; the conversions on the small model of ExtentReadTests.
@Suite struct ConvertResumeTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    static let a = PersistManifest.Layout(layout: "tp=4 pp=1", sources: [SourceFingerprint(name: "m.safetensors", size: 10, mtimeNanoseconds: 1, headerCRC32: 7)])
    static let b = PersistManifest.Layout(layout: "tp=2 pp=1", sources: a.sources)
    static let naming = TargetNaming.out("/o")

    static func rank(_ tp: Int, _ suffix: String = "") -> String { "model/dp_rank_00_tp_rank_0\(tp)_pp_rank_00.pt\(suffix)" }
    static let planTP2: Set<String> = [rank(0), rank(1)]

    // MARK: Decisions (pure)

    /// The manifest's layout is written without JSONEncoder (it may hold
    /// 300,000 sources): Foundation's decoder must read back the same
    /// layout, names with quotes, backslashes, control and non-ASCII
    /// characters included, and the largest values of each field.
    @Test func layoutJSONReadsBack() throws {
        let layout = PersistManifest.Layout(layout: "tp 2, \"quoted\" \\ é\t", sources: [
            SourceFingerprint(name: "optim/dp_rank_00.pt.tensors/tensor_0.pt", size: 0, mtimeNanoseconds: -1, headerCRC32: 0),
            SourceFingerprint(name: "a\"b\\c\u{1}\nd ü 🙂", size: Int.max, mtimeNanoseconds: Int.max, headerCRC32: .max),
        ])
        let decoded = try JSONDecoder().decode(PersistManifest.Layout.self, from: layout.json)
        #expect(decoded == layout)
        let none = PersistManifest.Layout(layout: "", sources: [])
        #expect(try JSONDecoder().decode(PersistManifest.Layout.self, from: none.json) == none)
    }

    /// The layout is written and compared a piece at a time: the pieces
    /// make the whole document, and a rerun's layout is recognised by its
    /// bytes, any other byte (or one more, or one fewer) is not.
    @Test func layoutIsWrittenAndComparedInPieces() throws {
        let sources = (0..<500).map { SourceFingerprint(name: "optim/x.pt.tensors/tensor_\($0).pt", size: $0, mtimeNanoseconds: 7, headerCRC32: 9) }
        let layout = PersistManifest.Layout(layout: "tp=2", sources: sources)
        var pieces: [[UInt8]] = []
        try layout.writeJSON(pieceBytes: 1000) { pieces.append($0) }
        #expect(pieces.count > 10)
        let whole = pieces.flatMap { $0 }
        #expect(try JSONDecoder().decode(PersistManifest.Layout.self, from: Data(whole)) == layout)

        let dir = try Dir()
        let manifest = PersistManifest(directory: dir.path)
        #expect(!manifest.layoutFileHolds(layout))
        #expect(try manifest.claim(layout, force: false).isEmpty)
        #expect(manifest.layoutFileHolds(layout))
        let path = dir.path + "/.shardfs/layout.json"
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(whole))
        var other = sources
        other[400] = SourceFingerprint(name: other[400].name, size: 401, mtimeNanoseconds: 7, headerCRC32: 9)
        #expect(!manifest.layoutFileHolds(PersistManifest.Layout(layout: "tp=2", sources: other)))
        #expect(!manifest.layoutFileHolds(PersistManifest.Layout(layout: "tp=2", sources: Array(sources.dropLast()))))
        try (Data(whole) + Data([0x20])).write(to: URL(fileURLWithPath: path))
        #expect(!manifest.layoutFileHolds(layout))
        // Equal but written otherwise (an older writer's spacing): decoded, and accepted.
        try JSONEncoder.init().encode(layout).write(to: URL(fileURLWithPath: path))
        #expect(try manifest.claim(layout, force: false).isEmpty)
    }

    @Test func familiesHoldTheirFilesOnly() {
        let ranks = TargetFamily.rankFiles, hf = TargetFamily.huggingFace
        #expect(ranks.holds("model/dp_rank_00_tp_rank_03_pp_rank_00.pt"))
        #expect(ranks.holds("model/dp_rank_00_tp_rank_03_pp_rank_00.pt.tensors/tensor_0.pt"))
        #expect(ranks.holds("model/tp_rank_00_pp_rank_00/checkpoint.pt"))
        #expect(!ranks.holds("optim/dp_rank_00_tp_rank_00_pp_rank_00.pt"))
        #expect(!ranks.holds("model/README"))
        #expect(!ranks.holds("done"))
        #expect(hf.holds("model-00001-of-00002.safetensors") && hf.holds("model.safetensors") && hf.holds("model.safetensors.index.json"))
        #expect(!hf.holds("config.json") && !hf.holds("tokenizer.json") && !hf.holds("sub/model.safetensors"))
        #expect(!hf.holds("model/dp_rank_00_tp_rank_00_pp_rank_00.pt"))
    }

    @Test func emptyDirectoryIsClaimed() throws {
        let decision = try TargetDirectory.decide(TargetInventory(), wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2,
                                                  force: false, naming: Self.naming)
        #expect(decision == TargetDecision())
    }

    @Test func filesOfAnotherLayoutWithoutManifestAreRefusedByName() throws {
        // NxD's converter wrote TP=4 here (no manifest); TP=2 names ranks 0 and 1 only.
        let inventory = TargetInventory(files: [Self.rank(0), Self.rank(1), Self.rank(2), Self.rank(3)])
        #expect(throws: ShardFSError.badLayout(
            flag: "OUT /o",
            reason: "holds 2 files of another layout, which this one (tp=2 pp=1) does not write: model/dp_rank_00_tp_rank_02_pp_rank_00.pt, model/dp_rank_00_tp_rank_03_pp_rank_00.pt; use another OUT, or --force to remove them")) {
            try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: false, naming: Self.naming)
        }
        // --force removes exactly those; ranks 0 and 1 (no entries) are rewritten.
        let forced = try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: true, naming: Self.naming)
        #expect(forced == TargetDecision(removeFiles: [Self.rank(2), Self.rank(3)]))
        // Files the plan names, without entries: nothing to refuse.
        let same = TargetInventory(files: [Self.rank(0), Self.rank(1)])
        #expect(try TargetDirectory.decide(same, wanted: Self.b, planned: Self.planTP2, mine: [Self.rank(0)], force: false, naming: Self.naming) == TargetDecision())
    }

    @Test func manifestOfAnotherLayoutIsRefusedNamingTheDifferenceAndFiles() throws {
        let inventory = TargetInventory(layout: Self.a, finished: [.init(path: Self.rank(2), size: 5, crc32: 1)],
                                        files: [Self.rank(0), Self.rank(2)])
        #expect(throws: ShardFSError.badLayout(
            flag: "OUT /o",
            reason: "holds another layout (tp=4 pp=1), not this one (tp=2 pp=1), in 2 files: model/dp_rank_00_tp_rank_00_pp_rank_00.pt, model/dp_rank_00_tp_rank_02_pp_rank_00.pt; use another OUT, or --force to replace it")) {
            try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: false, naming: Self.naming)
        }
        let forced = try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: true, naming: Self.naming)
        #expect(forced == TargetDecision(replaceLayout: true, removeFiles: [Self.rank(2)]))
        // Another source: the fingerprint's difference is named, for --persist-to too.
        var touched = Self.b
        touched = PersistManifest.Layout(layout: touched.layout, sources: [SourceFingerprint(name: "m.safetensors", size: 11, mtimeNanoseconds: 1, headerCRC32: 7)])
        #expect(throws: ShardFSError.badLayout(
            flag: "--persist-to /d",
            reason: "holds another source: m.safetensors is 11 bytes, was 10; use another directory, or --force to replace it")) {
            try TargetDirectory.decide(TargetInventory(layout: Self.b), wanted: touched, planned: Self.planTP2, mine: Self.planTP2,
                                       force: false, naming: .persistTo("/d"))
        }
    }

    @Test func sameManifestKeepsEverything() throws {
        let inventory = TargetInventory(layout: Self.b, finished: [.init(path: Self.rank(0), size: 5, crc32: 1)], files: [Self.rank(0), Self.rank(1)])
        #expect(try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: [Self.rank(1)], force: false, naming: Self.naming) == TargetDecision())
        #expect(try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: [Self.rank(1)], force: true, naming: Self.naming) == TargetDecision())
    }

    @Test func xserFoldersOfAnotherLayoutAreNamedAndRemovedDeepestFirst() throws {
        // NxD's converter with --save_xser: plain files and empty P.tensors
        // folders; the pt layout of the same ranks writes P only.
        let inventory = TargetInventory(files: [Self.rank(0), Self.rank(1), Self.rank(1, ".tensors/tensor_0.pt")],
                                        folders: [Self.rank(0, ".tensors"), Self.rank(1, ".tensors")])
        #expect(throws: ShardFSError.badLayout(
            flag: "OUT /o",
            reason: "holds 2 files of another layout, which this one (tp=2 pp=1) does not write: model/dp_rank_00_tp_rank_01_pp_rank_00.pt.tensors/tensor_0.pt, model/dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors/; use another OUT, or --force to remove them")) {
            try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: false, naming: Self.naming)
        }
        let forced = try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: true, naming: Self.naming)
        #expect(forced == TargetDecision(removeFiles: [Self.rank(1, ".tensors/tensor_0.pt")],
                                         removeFolders: [Self.rank(0, ".tensors"), Self.rank(1, ".tensors")]))
        // An xser layout names its folders: kept.
        let xser: Set<String> = [Self.rank(0), Self.rank(0, ".info.pt"), Self.rank(0, ".tensors/tensor_0.pt")]
        let one = TargetInventory(files: [Self.rank(0)], folders: [Self.rank(0, ".tensors")])
        #expect(try TargetDirectory.decide(one, wanted: Self.b, planned: xser, mine: xser, force: false, naming: Self.naming) == TargetDecision())
    }

    @Test func theSourcesOwnFilesAreRefusedEvenWithForce() throws {
        var inventory = TargetInventory(files: [Self.rank(0)])
        inventory.sourceFiles = [Self.rank(0): "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"]
        for force in [false, true] {
            #expect(throws: ShardFSError.badLayout(
                flag: "OUT /o",
                reason: "holds model/dp_rank_00_tp_rank_00_pp_rank_00.pt, which is the source's model/dp_rank_00_tp_rank_00_pp_rank_00.pt: writing here would overwrite or remove the source; use another OUT")) {
                try TargetDirectory.decide(inventory, wanted: Self.b, planned: Self.planTP2, mine: Self.planTP2, force: force, naming: Self.naming)
            }
        }
    }

    @Test func unknownWholeLayoutReplacesOnlyWhatTheOldManifestRecorded() throws {
        // --persist-to with --part, the other parts' paths unknown.
        let inventory = TargetInventory(layout: Self.a, finished: [.init(path: Self.rank(1), size: 5, crc32: 1), .init(path: Self.rank(3), size: 5, crc32: 1)],
                                        files: [Self.rank(1), Self.rank(2), Self.rank(3)])
        let forced = try TargetDirectory.decide(inventory, wanted: Self.b, planned: nil, mine: [Self.rank(1)], force: true, naming: .persistTo("/d"))
        #expect(forced == TargetDecision(replaceLayout: true, removeFiles: [Self.rank(3)]))
        #expect(try TargetDirectory.decide(TargetInventory(files: [Self.rank(3)]), wanted: Self.b, planned: nil, mine: [Self.rank(1)],
                                           force: false, naming: .persistTo("/d")) == TargetDecision())
    }

    // MARK: Conversions

    /// A file without CRC fields (a safetensors file) gets its CRC-32 summed
    /// on another thread, chunk by chunk, while it is written: the CRC of
    /// the bytes on disk, over several 8 MiB chunks and a short tail.
    @Test func writerSumsTheCRCOfAFileWithoutCRCFields() throws {
        let dir = try Dir()
        var random = SplitMix64(seed: 5)
        let size = 2 * VirtualFileWriter.chunkSize + (1 << 20) / 2 + 3
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
        let file = VirtualFile(extents: [.literal(Array(bytes[..<1000])), .literal(Array(bytes[1000...]))])
        let writer = VirtualFileWriter(reader: ExtentReader(sources: []))
        defer { writer.close() }
        let crc = try writer.write(file, to: dir.path + "/f.safetensors")
        #expect(crc == CRC32.checksum(bytes))
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.path + "/f.safetensors"))) == bytes)
        #expect(try writer.write(file, to: dir.path + "/g", fileCRC: false) == 0)
    }

    static func listing(_ root: String) throws -> [String: (inode: UInt64, mtime: Int)] {
        var result: [String: (UInt64, Int)] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let path = enumerator?.nextObject() as? String {
            var info = stat()
            guard lstat(root + "/" + path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, !path.hasPrefix(".shardfs/") else { continue }
            result[path] = (UInt64(info.st_ino), info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec)
        }
        return result
    }

    static func converter(_ model: Checkpoint, _ options: LayoutOptions) throws -> Converter {
        Converter(checkpoint: model, plan: try LayoutPlanner.plan(checkpoint: model, options: options))
    }

    @Test func secondRunKeepsFinishedFilesAndRewritesACorruptedOne() throws {
        let dir = try Dir()
        let model = try ExtentReadTests.shardedCheckpoint(dir)
        let out = dir.path + "/out"
        let tp2 = try Self.converter(model, LayoutOptions(tpSize: 2, ppSize: 2))
        let first = try tp2.run(root: out, jobs: 2)
        #expect(first.writtenFiles == 4 && first.keptFiles == 0)
        let entries = try PersistManifest(directory: out).finished()
        #expect(entries.map(\.path) == tp2.plan.virtualFiles().map(\.path).sorted())
        for entry in entries {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out + "/" + entry.path)))
            #expect(bytes.count == entry.size && bitwiseCRC32(bytes) == entry.crc32, "\(entry.path)")
        }
        let before = try Self.listing(out)

        let second = try tp2.run(root: out, jobs: 2)
        #expect(second == Converter.Outcome(keptFiles: 4, keptBytes: first.writtenBytes))
        let after = try Self.listing(out)
        #expect(after.mapValues(\.inode) == before.mapValues(\.inode) && after.mapValues(\.mtime) == before.mapValues(\.mtime))

        // One byte changed in place (same size): its CRC no longer matches.
        let victim = Self.rank(1).replacingOccurrences(of: "pp_rank_00", with: "pp_rank_01")
        let fd = open(out + "/" + victim, O_WRONLY)
        #expect(fd >= 0)
        var byte: UInt8 = 0x5A
        #expect(pwrite(fd, &byte, 1, 200) == 1)
        close(fd)
        // A temporary a killed run left, and a finished file removed.
        let removed = Self.rank(0)
        #expect(unlink(out + "/" + removed) == 0)
        let temporary = out + "/model/.dp_rank_00_tp_rank_00_pp_rank_01.pt.shardfs-tmp-99999"
        #expect(FileManager.default.createFile(atPath: temporary, contents: Data([1, 2, 3])))
        let events = EventLog()
        let third = try tp2.run(root: out, jobs: 2, events: events.record)
        #expect(third.writtenFiles == 2 && third.keptFiles == 2)
        #expect(!FileManager.default.fileExists(atPath: temporary))
        #expect(events.lines.contains { $0.hasPrefix("rewriting \(victim): its CRC-32 is ") })
        #expect(events.lines.contains("rewriting \(removed): it is missing"))
        let healed = try Self.listing(out)
        #expect(Set(healed.keys) == Set(before.keys))
        for (path, id) in healed where path != victim && path != removed {
            #expect(id.inode == before[path]?.inode && id.mtime == before[path]?.mtime, "\(path) was rewritten")
        }
        for entry in try PersistManifest(directory: out).finished() {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: out + "/" + entry.path)))
            #expect(bitwiseCRC32(bytes) == entry.crc32, "\(entry.path)")
        }
    }

    @Test func anotherLayoutIsRefusedUntouchedAndForceLeavesOnlyTheNewOne() throws {
        let dir = try Dir()
        let model = try ExtentReadTests.shardedCheckpoint(dir)
        let out = dir.path + "/out"
        try FileManager.default.createDirectory(atPath: out + "/optim", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: out + "/optim/state.pt", contents: Data([1])))
        let tp2 = try Self.converter(model, LayoutOptions(tpSize: 2))
        try tp2.run(root: out, jobs: 2)
        let before = try Self.listing(out)
        let layoutBefore = try Data(contentsOf: URL(fileURLWithPath: out + "/.shardfs/layout.json"))

        let tp1 = try Self.converter(model, LayoutOptions(tpSize: 1))
        #expect(throws: ShardFSError.self) { try tp1.run(root: out, jobs: 2) }
        do {
            try tp1.run(root: out, jobs: 2)
        } catch {
            #expect(error.description.hasPrefix("OUT \(out): holds another layout (tp=2 pp=1 vpp=1 kv_mult=1 trn1 source-dtype), not this one (tp=1 pp=1 vpp=1 kv_mult=1 trn1 source-dtype), in 2 files: model/dp_rank_00_tp_rank_00_pp_rank_00.pt, model/dp_rank_00_tp_rank_01_pp_rank_00.pt; use another OUT, or --force"), "\(error)")
        }
        let after = try Self.listing(out)
        #expect(after.mapValues(\.inode) == before.mapValues(\.inode) && after.mapValues(\.mtime) == before.mapValues(\.mtime))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/.shardfs/layout.json")) == layoutBefore)

        let forced = try tp1.run(root: out, jobs: 2, force: true)
        #expect(forced.removed == [Self.rank(1)] && forced.writtenFiles == 1 && forced.keptFiles == 0)
        #expect(Set(try Self.listing(out).keys) == ["optim/state.pt", Self.rank(0)])
        #expect(try PersistManifest(directory: out).finished().map(\.path) == [Self.rank(0)])
    }

    @Test func huggingFaceOutputRefusesOtherShardsAndResumes() throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2), in: dir)
        let source = try NxDSourceTests.openTag(tag, model)
        let out = dir.path + "/hf"
        var small = LayoutOptions(format: .hf)
        small.maxShardSize = 400  // several shards and an index
        let sharded = Converter(checkpoint: source, plan: try LayoutPlanner.plan(checkpoint: source, options: small))
        let shardPaths = sharded.plan.virtualFiles().map(\.path)
        #expect(shardPaths.contains("model.safetensors.index.json") && shardPaths.count > 3)
        try sharded.run(root: out, jobs: 2)
        #expect(FileManager.default.createFile(atPath: out + "/tokenizer.json", contents: Data([1])))
        #expect(try sharded.run(root: out, jobs: 2).keptFiles == shardPaths.count)

        let single = Converter(checkpoint: source, plan: try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(format: .hf)))
        #expect(single.plan.virtualFiles().map(\.path).sorted() == ["config.json", "model.safetensors"])
        #expect(throws: ShardFSError.self) { try single.run(root: out, jobs: 2) }
        let forced = try single.run(root: out, jobs: 2, force: true)
        #expect(Set(forced.removed) == Set(shardPaths.filter { $0 != "config.json" }))
        #expect(Set(try Self.listing(out).keys) == ["config.json", "model.safetensors", "tokenizer.json"])
    }

    /// One mechanism: a converted OUT is a finished --persist-to DIR (and
    /// back): nothing is rewritten either way.
    @Test func persistAfterConvertAndConvertAfterPersistRewriteNothing() throws {
        let dir = try Dir()
        let model = try ExtentReadTests.shardedCheckpoint(dir)
        let converter = try Self.converter(model, LayoutOptions(tpSize: 2, ppSize: 2))
        let files = converter.plan.virtualFiles()
        func persist(_ target: String) throws -> MaterialiserStatus {
            let materialiser = Materialiser(checkpoint: model, files: files,
                                            options: .init(directory: target, layout: converter.plan.options.summary),
                                            logger: Logger(label: "test"), readersActive: { false }, verified: { _, _ in })
            try materialiser.prepare()
            materialiser.start()
            materialiser.wait()
            return materialiser.status
        }
        let converted = dir.path + "/converted"
        try converter.run(root: converted, jobs: 2)
        let before = try Self.listing(converted)
        let status = try persist(converted)
        #expect(status.state == .done && status.filesResumed == files.count)
        let after = try Self.listing(converted)
        #expect(after.mapValues(\.inode) == before.mapValues(\.inode) && after.mapValues(\.mtime) == before.mapValues(\.mtime))

        let persisted = dir.path + "/persisted"
        #expect(try persist(persisted).filesResumed == 0)
        let outcome = try converter.run(root: persisted, jobs: 2)
        #expect(outcome.keptFiles == files.count && outcome.writtenFiles == 0)
        for (path, _) in files {
            #expect(try Data(contentsOf: URL(fileURLWithPath: converted + "/" + path)) == Data(contentsOf: URL(fileURLWithPath: persisted + "/" + path)), "\(path)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: converted + "/.shardfs/layout.json")) == Data(contentsOf: URL(fileURLWithPath: persisted + "/.shardfs/layout.json")))
    }

    @Test func convertingIntoTheSourceTagIsRefused() throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2), in: dir)
        let source = try NxDSourceTests.openTag(tag, model)
        for tp in [1, 2] {
            let converter = Converter(checkpoint: source, plan: try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: tp)))
            for force in [false, true] {
                #expect(throws: ShardFSError.self) { try converter.run(root: tag, jobs: 1, force: force) }
            }
        }
        #expect(FileManager.default.fileExists(atPath: tag + "/" + Self.rank(1)))
    }
}

/// Events of a conversion as the lines a test looks for.
final class EventLog: Sendable {
    private let storage = Mutex<[String]>([])
    var lines: [String] { storage.withLock { $0 } }

    func record(_ event: ConvertEvent) {
        switch event {
        case let .rewriting(path, reason): storage.withLock { $0.append("rewriting \(path): \(reason)") }
        case let .removed(path): storage.withLock { $0.append("removed \(path)") }
        default: break
        }
    }
}
