import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The mount's FUSE-free core, driven as the FUSE adapter drives it but
/// without /dev/fuse: the tree, attributes, and above all which pieces make up
/// a read. The reference model is the whole virtual file read in one go
/// (itself checked against hand-computed bytes in ExtentReadTests): every
/// read answered by segments must equal the same range of it.
@Suite struct MountedFileSystemTests {
    typealias Fixture = ExtentReadTests

    static func mounted(_ dir: Fixture.TemporaryDirectory, _ options: LayoutOptions, maximumRead: Int = 4096)
        throws -> (MountedFileSystem, Checkpoint, LayoutPlan) {
        let checkpoint = try Fixture.shardedCheckpoint(dir)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: options)
        let fs = MountedFileSystem(checkpoint: checkpoint, files: plan.virtualFiles(), maximumRead: maximumRead)
        return (fs, checkpoint, plan)
    }

    /// Resolves segments to bytes without ShardFS's readers: buffer bytes as
    /// given, a persisted copy's or a source's range read with pread.
    static func resolve(_ segments: [ReadSegment], _ buffer: UnsafeMutableRawBufferPointer) throws -> [UInt8] {
        var out: [UInt8] = []
        for segment in segments {
            switch segment {
            case let .buffer(range):
                out += Array(UnsafeRawBufferPointer(rebasing: buffer[range]))
            case let .persisted(descriptor, offset, count), let .source(descriptor, offset, count):
                var bytes = [UInt8](repeating: 0, count: count)
                let n = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
                out += bytes.prefix(max(0, n))
            }
        }
        return out
    }

    @Test(arguments: [
        LayoutOptions(tpSize: 2, ppSize: 2),
        LayoutOptions(tpSize: 2, ppSize: 1, qkvLinear: true, fuseQKV: true, dtype: .float32),
    ])
    func everyReadMatchesTheWholeFile(options: LayoutOptions) throws {
        let dir = try Fixture.TemporaryDirectory()
        let (fs, checkpoint, plan) = try Self.mounted(dir, options)
        var random = SplitMix64(seed: 7)
        for (path, file) in plan.virtualFiles() {
            let whole = try readWhole(file, sources: checkpoint.files)
            let parts = path.split(separator: "/").map(String.init)
            let directory = try #require(fs.tree.lookup(parent: FileTree.rootInode, name: parts[0]))
            let node = try #require(fs.tree.lookup(parent: directory.inode, name: parts[1]))
            #expect(fs.attributes(node.inode)?.st_size == whole.count)
            // Every extent boundary, and random ranges up to past the end.
            var starts = file.make().starts
            for _ in 0..<60 { starts.append(Int.random(in: 0..<whole.count, using: &random)) }
            for start in starts {
                let count = Int.random(in: 1...6000, using: &random)
                let segments = try fs.read(node.inode, offset: start, count: count, allowSplice: true) { segments, buffer in
                    (segments, Result { try Self.resolve(segments, buffer) })
                }.get()
                let end = min(whole.count, start + min(count, fs.maximumRead))
                #expect(try segments.1.get() == Array(whole[start..<end]), "\(path) at \(start) (+\(count))")
                // This fixture's tensors are a few KiB: no run is long enough
                // to splice (SourceLeaseTests has those).
                #expect(segments.0.allSatisfy { if case .buffer = $0 { true } else { false } })
            }
        }
    }

    @Test func treeAttributesAndStableInodes() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (fs, _, plan) = try Self.mounted(dir, LayoutOptions(tpSize: 2, ppSize: 2))
        let root = try #require(fs.attributes(FileTree.rootInode))
        #expect(root.st_mode == S_IFDIR | 0o555)
        #expect(root.st_nlink == 3)
        let model = try #require(fs.tree.lookup(parent: FileTree.rootInode, name: "model"))
        #expect(model.inode == 2)
        let names = try #require(fs.tree.entries(of: model.inode)).map(\.name)
        #expect(names == [".", ".."] + plan.files.map { String($0.path.dropFirst("model/".count)) })
        for (index, file) in plan.files.enumerated() {
            let node = try #require(fs.tree.lookup(parent: model.inode, name: String(file.path.dropFirst(6))))
            #expect(node.inode == UInt64(3 + index))
            let attributes = try #require(fs.attributes(node.inode))
            #expect(attributes.st_mode == S_IFREG | 0o444)
            #expect(attributes.st_size == file.virtualFile(layout: plan.options).size)
        }
        #expect(fs.tree.lookup(parent: model.inode, name: "missing.pt") == nil)
        #expect(fs.tree.entries(of: 3) == nil)
        let result = fs.read(2, offset: 0, count: 10, allowSplice: true) { _, _ in 0 }
        #expect(throws: MountedFileSystem.ReadError.isDirectory) { try result.get() }
    }

    @Test func aChangedSourceFailsReadsOfItsFilesOnly() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (fs, checkpoint, plan) = try Self.mounted(dir, LayoutOptions(tpSize: 1, ppSize: 2))
        // pp rank 0 (layer 0, embed) lives in shard 1 only; pp rank 1 uses shard 2.
        let second = try #require(checkpoint.files.firstIndex { $0.name == "model-00002-of-00002.safetensors" })
        let model = fs.tree.lookup(parent: 1, name: "model")!.inode
        let usesSecond = fs.inodes(usingSource: second)
        let pp0 = fs.tree.lookup(parent: model, name: "dp_rank_00_tp_rank_00_pp_rank_00.pt")!.inode
        let pp1 = fs.tree.lookup(parent: model, name: "dp_rank_00_tp_rank_00_pp_rank_01.pt")!.inode
        #expect(usesSecond == [pp1])
        #expect(plan.files.count == 2)

        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: checkpoint.files[second].path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0]))
        try handle.close()

        // The first 4 KiB hold tensor bytes of the shard (the zip header alone
        // is made from the plan, not read from the source).
        let failed = fs.read(pp1, offset: 0, count: 4096, allowSplice: true) { _, _ in 0 }
        guard case let .failure(.sourceChanged(source, problem)) = failed else {
            Issue.record("expected a sourceChanged failure, got \(failed)")
            return
        }
        #expect(source == "model-00002-of-00002.safetensors")
        #expect(problem.contains("size changed"))
        #expect(fs.watch.checkPaths() == [])  // already known from the check after the read
        // Now known, it fails every read of the file, even of its zip header.
        guard case .failure(.sourceChanged) = fs.read(pp1, offset: 0, count: 100, allowSplice: true, reply: { _, _ in 0 }) else {
            Issue.record("a known broken source must fail every read of its files")
            return
        }
        // Found by a read or by the poller, the source is handed out once to
        // have its files' cached pages dropped.
        #expect(fs.watch.takeNewlyBroken() == [second])
        #expect(fs.watch.takeNewlyBroken() == [])
        #expect((try? fs.read(pp0, offset: 0, count: 100, allowSplice: true) { _, _ in 0 }.get()) == 0)
    }

    @Test func aReplacedSourceIsNoticedByPath() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (fs, checkpoint, _) = try Self.mounted(dir, LayoutOptions(tpSize: 1, ppSize: 1))
        let path = checkpoint.files[0].path
        let contents = try Data(contentsOf: URL(fileURLWithPath: path))
        try contents.write(to: URL(fileURLWithPath: path + ".new"))
        #expect(rename(path + ".new", path) == 0)
        #expect(fs.watch.checkPaths() == [0])
        #expect(fs.watch.problem(0)?.contains("replaced") == true)
    }

    @Test func mountinfoParsing() {
        let text = """
            22 1 0:21 / /proc rw,nosuid - proc proc rw
            97 30 0:52 / /tmp/with\\040space rw,nosuid,nodev - fuse.shardfs shardfs ro,user_id=0
            """
        let entries = MountTable.entries(mountinfo: text)
        #expect(entries == [
            MountTable.Entry(mountPoint: "/proc", fileSystemType: "proc", device: "0:21"),
            MountTable.Entry(mountPoint: "/tmp/with space", fileSystemType: "fuse.shardfs", device: "0:52"),
        ])
        #expect(MountTable.absolute("/a/./b/../c/") == "/a/c")
    }

    @Test func mountPointChecksNameTheProblem() throws {
        let dir = try Fixture.TemporaryDirectory()
        func problem(_ path: String) -> String? {
            do throws(ShardFSError) { try MountTable.checkMountPoint(path); return nil } catch { return error.description }
        }
        #expect(problem(dir.path + "/missing")?.contains("no such directory") == true)
        try dir.write("file", [1])
        #expect(problem(dir.path + "/file")?.contains("not a directory") == true)
        #expect(problem(dir.path)?.contains("not empty") == true)
        #expect(problem("/proc")?.contains("already a mount point") == true)
        try FileManager.default.createDirectory(atPath: dir.path + "/empty", withIntermediateDirectories: false)
        #expect(problem(dir.path + "/empty") == nil)
    }
}
