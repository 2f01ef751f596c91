import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The xser format wired through the one engine (docs/formats/xser.md): the files a plan
/// becomes, their paths and order, each tensor file's bytes (computed by hand
/// in ExtentReadTests from the known source values), serialization ids, and
/// the same list driving the mount's tree, `--part` and convert.
@Suite struct XserLayoutTests {
    typealias Fixture = ExtentReadTests

    static func plan(_ dir: Fixture.TemporaryDirectory, _ options: LayoutOptions) throws -> (Checkpoint, LayoutPlan) {
        let checkpoint = try Fixture.shardedCheckpoint(dir)
        return (checkpoint, try LayoutPlanner.plan(checkpoint: checkpoint, options: options))
    }

    static let xserTP2PP2 = LayoutOptions(tpSize: 2, ppSize: 2, format: .xser)

    /// Per rank file p, in tp-major order: p, p.info.pt, then p.tensors/tensor_<tid>.pt by tid.
    @Test func pathsComeInRankGroups() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (_, plan) = try Self.plan(dir, Self.xserTP2PP2)
        var expected: [String] = []
        for tp in 0..<2 {
            for pp in 0..<2 {
                let p = "model/dp_rank_00_tp_rank_0\(tp)_pp_rank_0\(pp).pt"
                let count = Fixture.expectedTensors(tp: tp, layers: [pp], first: pp == 0, last: pp == 1).count
                expected += [p, p + ".info.pt"] + (0..<count).map { "\(p).tensors/tensor_\($0).pt" }
            }
        }
        #expect(plan.virtualFiles().map(\.path) == expected)
        // pt: the rank files alone, as before.
        var pt = Self.xserTP2PP2
        pt.format = .pt
        let (_, ptPlan) = try Self.plan(dir, pt)
        #expect(ptPlan.virtualFiles().map(\.path) == plan.files.map(\.path))
    }

    /// The compact list finds each file by its path alone, and nothing that
    /// is not one of its files: a tensor file of a tid past the group's, or
    /// spelt otherwise (`tensor_01.pt`), a group that does not exist.
    @Test func filesAreFoundByPath() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (_, plan) = try Self.plan(dir, Self.xserTP2PP2)
        let files = plan.virtualFiles()
        for (path, file) in files {
            #expect(files.file(at: path)?.size == file.size, "\(path)")
        }
        let p = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
        let count = Fixture.expectedTensors(tp: 0, layers: [0], first: true, last: false).count
        #expect(files.contains(path: "\(p).tensors/tensor_\(count - 1).pt"))
        for absent in ["\(p).tensors/tensor_\(count).pt", "\(p).tensors/tensor_01.pt", "\(p).tensors/tensor_-1.pt",
                       "\(p).tensors/tensor_x.pt", "model/dp_rank_00_tp_rank_07_pp_rank_00.pt.info.pt", "\(p).tensors", "model", p + ".pt"] {
            #expect(!files.contains(path: absent), "\(absent)")
        }
        var folders: Set<String> = ["model"]
        for tp in 0..<2 {
            for pp in 0..<2 { folders.insert("model/dp_rank_00_tp_rank_0\(tp)_pp_rank_0\(pp).pt.tensors") }
        }
        #expect(files.folders == folders)
        #expect(files.totalSize == files.reduce(0) { $0 + $1.file.size })
        // A share without the markers keeps whole groups.
        #expect(files.removing { $0 == p }.map(\.path) == files.map(\.path).filter { !$0.hasPrefix(p) })
    }

    /// Each tensor file holds exactly its tensor's bytes, under its own archive name.
    @Test(arguments: [DType.bfloat16, .float32])
    func tensorFilesHoldTheTensors(output: DType) throws {
        let dir = try Fixture.TemporaryDirectory()
        var options = Self.xserTP2PP2
        options.dtype = output
        let (checkpoint, plan) = try Self.plan(dir, options)
        let byPath = Dictionary(uniqueKeysWithValues: plan.virtualFiles().map { ($0.path, $0.file) })
        for file in plan.files {
            let expected = Fixture.expectedTensors(tp: file.tpRank, layers: [file.ppRank], first: file.ppRank == 0, last: file.ppRank == 1)
            for (tid, (key, elements)) in expected.enumerated() {
                let path = "\(file.path).tensors/tensor_\(tid).pt"
                let virtual = try #require(byPath[path], "\(path) missing")
                let contents = try TestZip.contents(try readWhole(virtual, sources: checkpoint.files))
                expectSameBytes(contents["tensor_\(tid)/data/0"] ?? [], Fixture.encode(elements, from: .bfloat16, to: output), "\(path) (\(key))")
                #expect(contents["tensor_\(tid)/data.pkl"] == PickleWriter.singleTensor(file.tensors[tid].torchDescription))
            }
            // The reference dict and the info dict hold no storages; their pickles name every key / tensor in order.
            let archive = String(file.path.dropFirst("model/".count).dropLast(".pt".count))
            let references = try TestZip.contents(try readWhole(try #require(byPath[file.path])))
            #expect(references.keys.sorted() == ["\(archive)/.data/serialization_id", "\(archive)/.format_version",
                                                 "\(archive)/.storage_alignment", "\(archive)/byteorder", "\(archive)/data.pkl", "\(archive)/version"])
            #expect(references["\(archive)/data.pkl"] == PickleWriter.tensorReferences(keys: expected.map(\.0)))
            let info = try TestZip.contents(try readWhole(try #require(byPath[file.path + ".info.pt"])))
            #expect(info["\(archive).pt.info/data.pkl"] == PickleWriter.tensorInfo(file.tensors.map(\.torchDescription)))
        }
    }

    /// Every file its own id, the same on every run; pt files keep the ids
    /// they had before formats existed (the pt summary is unchanged).
    @Test func serializationIDs() throws {
        #expect(LayoutOptions(tpSize: 2).summary == "tp=2 pp=1 vpp=1 kv_mult=1 trn1 source-dtype")
        #expect(LayoutOptions(tpSize: 2, format: .xser).summary == "tp=2 pp=1 vpp=1 kv_mult=1 trn1 source-dtype xser")
        let dir = try Fixture.TemporaryDirectory()
        let (_, plan) = try Self.plan(dir, Self.xserTP2PP2)
        func ids(_ files: PlannedFiles) throws -> [String] {
            try files.map { path, file in
                let name = TorchSaveFile.archiveName(forFileName: path) + "/.data/serialization_id"
                return String(decoding: try TestZip.contents(try readWhole(literalOnly(file.make())))[name] ?? [], as: UTF8.self)
            }
        }
        let first = try ids(plan.virtualFiles())
        #expect(first.allSatisfy { $0.utf8.count == 40 })
        #expect(Set(first).count == first.count)
        #expect(try ids(plan.virtualFiles()) == first)
    }

    /// `--part` shares rank files; each share's files are whole groups, and
    /// the shares together are the whole list, in order.
    @Test func partsKeepGroupsWhole() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (_, plan) = try Self.plan(dir, Self.xserTP2PP2)
        let all = plan.virtualFiles().map(\.path)
        for count in 1...4 {
            var joined: [String] = []
            for index in 0..<count {
                let ranks = Part(index: index, count: count).select(plan.files)
                let paths = plan.virtualFiles(ranks).map(\.path)
                #expect(paths.allSatisfy { path in ranks.contains { path == $0.path || path.hasPrefix($0.path + ".") } })
                joined += paths
            }
            #expect(joined == all, "\(count) parts")
        }
    }

    /// The mount's tree holds the nested `.tensors` folders, listed in plan order.
    @Test func mountedTree() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (checkpoint, plan) = try Self.plan(dir, Self.xserTP2PP2)
        let fs = MountedFileSystem(checkpoint: checkpoint, files: plan.virtualFiles())
        let model = try #require(fs.tree.lookup(parent: FileTree.rootInode, name: "model"))
        let names = try #require(fs.tree.entries(of: model.inode)).map(\.name)
        let p = "dp_rank_00_tp_rank_00_pp_rank_00.pt"
        #expect(Array(names.prefix(5)) == [".", "..", p, p + ".info.pt", p + ".tensors"])
        #expect(names.count == 2 + 4 * 3)
        let tensors = try #require(fs.tree.lookup(parent: model.inode, name: p + ".tensors"))
        #expect(fs.attributes(tensors.inode).map { $0.st_mode & S_IFMT } == S_IFDIR)
        #expect(fs.attributes(model.inode).map { Int($0.st_nlink) } == 2 + 4)  // four .tensors folders
        let count = Fixture.expectedTensors(tp: 0, layers: [0], first: true, last: false).count
        #expect(try #require(fs.tree.entries(of: tensors.inode)).map(\.name) == [".", ".."] + (0..<count).map { "tensor_\($0).pt" })
        let sizes = Dictionary(uniqueKeysWithValues: plan.virtualFiles().map { ($0.path, $0.file.size) })
        let t3 = try #require(fs.tree.lookup(parent: tensors.inode, name: "tensor_3.pt"))
        #expect(fs.attributes(t3.inode)?.st_size == sizes["model/\(p).tensors/tensor_3.pt"])
    }

    /// convert writes every file under its path, making the `.tensors` folders;
    /// an interrupted run leaves no empty `.tensors` folder behind.
    @Test func convertWritesTheTreeAndCleansUp() throws {
        let dir = try Fixture.TemporaryDirectory()
        let (checkpoint, plan) = try Self.plan(dir, Self.xserTP2PP2)
        let converter = Converter(checkpoint: checkpoint, plan: plan)
        let out = dir.path + "/out"
        try converter.run(root: out, jobs: 2)
        for (path, file) in plan.virtualFiles() {
            let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out + "/" + path)))
            #expect(written.count == file.size, "\(path)")
        }
        let interrupted = dir.path + "/interrupted"
        #expect(throws: ShardFSError.self) { try converter.run(root: interrupted, jobs: 1, isCancelled: { true }) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: interrupted + "/model") == [])
    }
}

/// `file` with every slice replaced by zeros: its literals (zip framing,
/// pickles, ids) read without any source.
func literalOnly(_ file: VirtualFile) -> VirtualFile {
    VirtualFile(extents: file.extents.map { extent in
        if case .slice = extent { return .literal([UInt8](repeating: 0, count: extent.byteCount)) }
        return extent
    }, crcSlots: file.crcSlots)
}
