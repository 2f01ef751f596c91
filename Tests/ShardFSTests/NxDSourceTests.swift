import Foundation
import Testing
@testable import ShardFS

/// An NxD tag as a source: the layout read back from its files, every Hugging
/// Face tensor assembled from them equal to the original's bytes (the
/// original file is the expectation), and each refusal naming its cause.
/// Tags are written by `Converter` from the small model of ExtentReadTests
/// (L=2, h=8, 4 Q heads, 2 KV heads, head_dim 2, I=12, V=16, untied).
@Suite struct NxDSourceTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    /// The model and a tag of it in `layout`, written under `dir/tag`.
    static func tag(_ layout: LayoutOptions, in dir: Dir) throws -> (model: Checkpoint, tag: String) {
        let model = try ExtentReadTests.singleFileCheckpoint(dir, .bfloat16)
        let plan = try LayoutPlanner.plan(checkpoint: model, options: layout)
        try Converter(checkpoint: model, plan: plan).run(root: dir.path + "/tag", jobs: 2)
        return (model, dir.path + "/tag")
    }

    /// The tensor's bytes as the original model.safetensors holds them.
    static func originalBytes(_ name: String, _ model: Checkpoint) throws -> [UInt8] {
        let t = try #require(model.tensors[name])
        let data = try Data(contentsOf: URL(fileURLWithPath: model.directory + "/model.safetensors"))
        return [UInt8](data[t.offset..<t.offset + t.byteCount])
    }

    static func openTag(_ tag: String, _ model: Checkpoint, backend: HardwareBackend? = nil, weightsOnly: Bool = false) throws -> Checkpoint {
        try Checkpoint.open(tag, options: SourceOptions(config: model.directory + "/config.json", backend: backend, weightsOnly: weightsOnly))
    }

    func expectRoundTrip(_ layout: LayoutOptions, backend: HardwareBackend? = nil, sourceLayout expected: LayoutOptions) throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(layout, in: dir)
        let source = try NxDSourceTests.openTag(tag, model, backend: backend)
        #expect(source.sourceLayout == expected)
        #expect(Set(source.tensors.keys) == Set(model.tensors.keys))
        for (name, tensor) in source.tensors {
            #expect(tensor.shape == model.tensors[name]?.shape, "\(name)")
            let got = try readWhole(VirtualFile(extents: RowBlock(whole: tensor).extents(outputDType: tensor.dtype)), sources: source.files)
            expectSameBytes(got, try NxDSourceTests.originalBytes(name, model), "\(name) from \(layout.summary)")
        }
    }

    @Test func plainTPAndPPRoundTrip() throws {
        try expectRoundTrip(LayoutOptions(tpSize: 4, ppSize: 2),
                            sourceLayout: LayoutOptions(tpSize: 4, ppSize: 2, dtype: .bfloat16))
    }

    @Test func qkvLinearWithoutReplicationNeedsNoBackend() throws {
        // T = Hkv = 2, m = 1: trn1 and trn2 place every head alike.
        try expectRoundTrip(LayoutOptions(tpSize: 2, qkvLinear: true, fuseQKV: true, backend: .trn2),
                            sourceLayout: LayoutOptions(tpSize: 2, qkvLinear: true, fuseQKV: true, backend: .trn1, dtype: .bfloat16))
    }

    @Test func qkvLinearAtTPOneAsNxDsTrainerSavesIt() throws {
        // T = 1 < Hkv = 2, m = 1 (the trainer's layout, not the converter's):
        // one rank holds both KV heads; trn1 and trn2 place them alike.
        for backend in HardwareBackend.allCases {
            try expectRoundTrip(LayoutOptions(tpSize: 1, qkvLinear: true, backend: backend),
                                sourceLayout: LayoutOptions(tpSize: 1, qkvLinear: true, backend: .trn1, dtype: .bfloat16))
        }
    }

    /// A bf16 tag whose norms are float32 (as NxD's bf16 runs keep them),
    /// written at TP 1 with qkv_linear: read back, each Hugging Face tensor's
    /// dtype is the tag's, and a plan of another layout keeps them (the
    /// norms float32, the rest bf16) unless --dtype says otherwise.
    @Test func aTagsFloat32NormsStayFloat32() throws {
        let dir = try Dir()
        let model = try ExtentReadTests.singleFileCheckpoint(dir, .bfloat16)
        func isNorm(_ key: String) -> Bool { key.hasSuffix("norm.weight") }
        let plain = try LayoutPlanner.plan(checkpoint: model, options: LayoutOptions(qkvLinear: true))
        let files = plain.files.map { file in
            RankFile(tpRank: file.tpRank, ppRank: file.ppRank, tensors: file.tensors.map { t in
                isNorm(t.key) ? PlannedTensor(key: t.key, dtype: .float32, shape: t.shape, blocks: t.blocks) : t
            })
        }
        let mixed = LayoutPlan(options: plain.options, dtype: .bfloat16, files: files, layersOfPipelineRank: plain.layersOfPipelineRank, warnings: [])
        try Converter(checkpoint: model, plan: mixed).run(root: dir.path + "/tag", jobs: 2)
        let source = try NxDSourceTests.openTag(dir.path + "/tag", model)
        // 2 layers x 2 norms + model.norm float32; every other tensor bf16.
        let held = try #require(source.modelDTypes)
        #expect(held.count == model.tensors.count)
        #expect(held.filter { $0.value == .float32 }.keys.sorted() == model.tensors.keys.filter(isNorm).sorted())
        #expect(held.filter { $0.value == .bfloat16 }.count == model.tensors.count - 5)
        let plan = try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2, qkvLinear: true))
        for file in plan.files {
            for t in file.tensors { #expect(t.dtype == (isNorm(t.key) ? .float32 : .bfloat16), "\(t.key)") }
        }
        let narrowed = try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2, qkvLinear: true, dtype: .bfloat16))
        #expect(narrowed.files.allSatisfy { $0.tensors.allSatisfy { $0.dtype == .bfloat16 } })
    }

    @Test func replicatedKVHeadsOnTrn1AndTrn2() throws {
        for backend in HardwareBackend.allCases {
            try expectRoundTrip(LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, backend: backend), backend: backend,
                                sourceLayout: LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, backend: backend, dtype: .bfloat16))
        }
    }

    @Test func pipelineRanksAreInferred() throws {
        // pp 2 with qkv_linear: layer 0 in pp rank 0's files, layer 1 in pp rank 1's.
        try expectRoundTrip(LayoutOptions(tpSize: 2, ppSize: 2, qkvLinear: true),
                            sourceLayout: LayoutOptions(tpSize: 2, ppSize: 2, qkvLinear: true, dtype: .bfloat16))
    }

    @Test func ambiguousHeadOrderAsksForTheBackend() throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true), in: dir)
        let error = try #require(throws: ShardFSError.self) { try NxDSourceTests.openTag(tag, model) }
        #expect(error.description.contains("--source-hw-backend"))
        #expect(error.description.contains("trn1 or trn2"))
    }

    @Test func missingRankFileIsNamed() throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2, ppSize: 2), in: dir)
        try FileManager.default.removeItem(atPath: tag + "/model/dp_rank_00_tp_rank_01_pp_rank_00.pt")
        let error = try #require(throws: ShardFSError.self) { try NxDSourceTests.openTag(tag, model) }
        #expect(error.description.contains("dp_rank_00_tp_rank_01_pp_rank_00.pt"))
        #expect(error.description.contains("missing"))
    }

    @Test func expertParallelAndOtherDataParallelRanksAreRefused() throws {
        for name in ["dp_rank_00_ep_rank_00_tp_rank_00_pp_rank_00.pt", "dp_rank_01_tp_rank_00_pp_rank_00.pt"] {
            let dir = try Dir()
            let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2), in: dir)
            try Data([1]).write(to: URL(fileURLWithPath: tag + "/model/" + name))
            let error = try #require(throws: ShardFSError.self) { try NxDSourceTests.openTag(tag, model) }
            #expect(error.description.contains(name))
        }
    }

    @Test func aMissingConfigIsAskedFor() throws {
        let dir = try Dir()
        let (_, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2), in: dir)
        let error = try #require(throws: ShardFSError.self) { try Checkpoint.open(tag) }
        #expect(error.description.hasPrefix("--config: missing"))
    }

    /// With --weights-only a tag's training state is not read at all;
    /// without, an optim/ that is not ZeRO-1 state is refused by name.
    @Test func otherTagEntriesAreIgnoredForTheWeightsOnly() throws {
        let dir = try Dir()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2), in: dir)
        try FileManager.default.createDirectory(atPath: tag + "/optim", withIntermediateDirectories: true)
        for name in ["optim/dp_rank_00_tp_rank_00_pp_rank_00.pt", "scheduler.pt", "user_content.pt", "done", "checkpoint"] {
            try Data([0x50, 0x4B]).write(to: URL(fileURLWithPath: tag + "/" + name))
        }
        let weights = try NxDSourceTests.openTag(tag, model, weightsOnly: true)
        #expect(weights.sourceLayout?.tpSize == 2 && weights.trainingState == nil)
        let error = try #require(throws: ShardFSError.self) { try NxDSourceTests.openTag(tag, model) }
        #expect(error.description.hasPrefix("optim/dp_rank_00_tp_rank_01_pp_rank_00.pt: missing"))
    }

    @Test func rankFileNames() {
        #expect(NxDRankFiles.parseRanks("dp_rank_00_tp_rank_31_pp_rank_07.pt", pattern: ["dp_rank_", "_tp_rank_", "_pp_rank_"], suffix: ".pt")! == (0, 31, 7))
        #expect(NxDRankFiles.parseRanks("tp_rank_03_pp_rank_01", pattern: ["tp_rank_", "_pp_rank_"], suffix: "")! == (3, 1, 0))
        #expect(NxDRankFiles.parseRanks("dp_rank_00_tp_rank_3_pp_rank_0.pt.info.pt", pattern: ["dp_rank_", "_tp_rank_", "_pp_rank_"], suffix: ".pt") == nil)
        #expect(NxDRankFiles.parseRanks("dp_rank_00_tp_rank_x_pp_rank_0.pt", pattern: ["dp_rank_", "_tp_rank_", "_pp_rank_"], suffix: ".pt") == nil)
    }
}
