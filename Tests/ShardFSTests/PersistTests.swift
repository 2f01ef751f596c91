import Foundation
import Logging
import Synchronization
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The materialiser's pieces without FUSE: a mount serving a persisted copy
/// gives the same bytes as the engine (CRC fields zero), and DIR's manifest
/// refuses another layout or source by name.
@Suite struct PersistTests {
    typealias Fixture = ExtentReadTests

    @Test func persistedCopyReadsLikeTheEngine() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (fs, checkpoint, plan) = try MountedFileSystemTests.mounted(dir, LayoutOptions(tpSize: 2, ppSize: 2), maximumRead: 4096)
        let (path, file) = plan.virtualFiles()[1]
        let whole = try readWhole(file, sources: checkpoint.files)  // CRC fields 0
        let copy = dir.path + "/copy.pt"
        let writer = VirtualFileWriter(reader: ExtentReader(sources: checkpoint.files))
        defer { writer.close() }
        try writer.write(file.make(), to: copy)
        let written = [UInt8](try Data(contentsOf: URL(fileURLWithPath: copy)))
        #expect(written != whole, "the copy carries real CRCs")
        try fs.servePersisted(path, from: copy)
        #expect(fs.persisted.servedCount == 1)
        let inode = try #require(fs.tree.node(path: path)).inode
        // Every CRC field boundary, and random ranges.
        var starts: [Int] = []
        for field in file.make().crcSlots.flatMap(\.fieldOffsets) {
            for delta in [-3, 0, 2, 4] where field + delta >= 0 { starts.append(field + delta) }
        }
        var random = SplitMix64(seed: 11)
        for _ in 0..<80 { starts.append(Int.random(in: 0..<whole.count, using: &random)) }
        for start in starts {
            for allowSplice in [true, false] {
                let count = Int.random(in: 1...5000, using: &random)
                let result: Result<([UInt8]?, [ReadSegment]), MountedFileSystem.ReadError> =
                    fs.read(inode, offset: start, count: count, allowSplice: allowSplice) { segments, buffer in
                        (try? MountedFileSystemTests.resolve(segments, buffer), segments)
                    }
                let (bytes, segments) = try result.get()
                let end = min(whole.count, start + min(count, fs.maximumRead))
                #expect(bytes == Array(whole[start..<end]), "at \(start) (+\(count)), splice \(allowSplice)")
                let fromCopy = segments.contains { segment in if case .persisted = segment { return true } else { return false } }
                // Only a range inside one CRC field has nothing to take from the copy.
                if !allowSplice { #expect(!fromCopy) }
                if allowSplice, end - start > 4 { #expect(fromCopy, "at \(start): \(segments)") }
            }
        }
        // A copy changed behind the daemon's back is dropped: the engine answers.
        var times = [timespec(tv_sec: 12345, tv_nsec: 0), timespec(tv_sec: 12345, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, copy, &times, 0) == 0)
        let segments = try fs.read(inode, offset: 0, count: 4096, allowSplice: true) { s, _ in s }.get()
        #expect(!segments.contains { segment in if case .persisted = segment { return true } else { return false } })
        #expect(fs.persisted.servedCount == 0)
    }

    @Test func manifestRefusesAnotherLayoutOrSourceByName() throws {
        let dir = try Fixture.TemporaryDirectory()
        let checkpoint = try Fixture.shardedCheckpoint(dir)
        let fingerprints = try checkpoint.files.map { try SourceFingerprint($0) }
        let manifest = PersistManifest(directory: dir.path + "/out")
        let a = PersistManifest.Layout(layout: "tp=2 pp=1", sources: fingerprints)
        #expect(try manifest.claim(a, force: false).isEmpty)
        #expect(try manifest.claim(a, force: false).isEmpty, "the same layout again is accepted")
        try manifest.recordFinished(.init(path: "model/a.pt", size: 10, crc32: 0xDEAD_BEEF))
        #expect(try manifest.finished() == [.init(path: "model/a.pt", size: 10, crc32: 0xDEAD_BEEF)])

        let b = PersistManifest.Layout(layout: "tp=4 pp=1", sources: fingerprints)
        #expect(throws: ShardFSError.badLayout(flag: "--persist-to \(dir.path)/out",
                                               reason: "holds another layout (tp=2 pp=1), not this one (tp=4 pp=1); use another directory, or --force to replace it")) {
            try manifest.claim(b, force: false)
        }
        var touched = fingerprints
        touched[0] = SourceFingerprint(name: touched[0].name, size: touched[0].size, mtimeNanoseconds: 1, headerCRC32: touched[0].headerCRC32)
        #expect(throws: ShardFSError.badLayout(flag: "--persist-to \(dir.path)/out",
                                               reason: "holds another source: \(touched[0].name) was modified since (mtime differs); use another directory, or --force to replace it")) {
            try manifest.claim(PersistManifest.Layout(layout: "tp=2 pp=1", sources: touched), force: false)
        }
        // --force: the old layout's finished files are handed back, the entries forgotten.
        #expect(try manifest.claim(b, force: true) == [.init(path: "model/a.pt", size: 10, crc32: 0xDEAD_BEEF)])
        #expect(try manifest.finished().isEmpty)
        #expect(try manifest.claim(b, force: false).isEmpty)
    }

    /// The materialiser without a mount: every file lands complete with its
    /// manifest entry (whole-file CRC checked bit by bit here), each is
    /// reported verified, and a second run on the same DIR keeps them all.
    @Test func materialiserPersistsAndResumes() throws {
        let dir = try Fixture.TemporaryDirectory()
        let checkpoint = try Fixture.shardedCheckpoint(dir)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: LayoutOptions(tpSize: 2, ppSize: 2))
        let files = plan.virtualFiles()
        let target = dir.path + "/persisted"
        func run() throws -> (MaterialiserStatus, [String]) {
            let seen = Mutex<[String]>([])
            let materialiser = Materialiser(checkpoint: checkpoint, files: files,
                                            options: .init(directory: target, layout: plan.options.summary),
                                            logger: Logger(label: "test"), readersActive: { false },
                                            verified: { path, copy in
                                                #expect(copy == target + "/" + path)
                                                seen.withLock { $0.append(path) }
                                            })
            try materialiser.prepare()
            materialiser.start()
            materialiser.wait()
            return (materialiser.status, seen.withLock { $0 }.sorted())
        }
        let (first, verified) = try run()
        #expect(first.state == .done && first.filesDone == files.count && first.filesResumed == 0 && first.lastError == nil)
        #expect(verified == files.map(\.path).sorted())
        let entries = try PersistManifest(directory: target).finished()
        #expect(entries.map(\.path).sorted() == files.map(\.path).sorted())
        for entry in entries {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: target + "/" + entry.path)))
            #expect(bytes.count == entry.size)
            #expect(bitwiseCRC32(bytes) == entry.crc32, "\(entry.path)")
        }
        let before = try FileManager.default.attributesOfItem(atPath: target + "/" + files[0].path)[.modificationDate] as? Date
        let (second, _) = try run()
        #expect(second.state == .done && second.filesResumed == files.count)
        let after = try FileManager.default.attributesOfItem(atPath: target + "/" + files[0].path)[.modificationDate] as? Date
        #expect(before == after, "a finished file was rewritten")
    }
}

