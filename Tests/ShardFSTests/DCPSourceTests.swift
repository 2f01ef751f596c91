import Foundation
import Testing
@testable import ShardFS

/// A DCP folder as a source (Source/DCP/): a tiny TorchTitan-named Llama3
/// folder built here item by item (each item a torch.save archive, the
/// `.metadata` a pickle of torch's Metadata), then opened. Expectations are
/// literal: which TorchTitan rows each Hugging Face row comes from, and
/// where in the `.distcp` files an element lies, found by searching the
/// files for the element's own bytes.
///
/// The model: 1 layer, hidden 8, 2 query heads and 1 KV head of dim 4,
/// intermediate 4, vocab 4. Element k of the n-th parameter (TorchTitan's
/// order) is n * 1000 + k; its exp_avg n * 1000 + 500 + k, its exp_avg_sq
/// n * 1000 + 800 + k.
@Suite struct DCPSourceTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    static let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 4, "vocab_size": 4,
         "torch_dtype": "bfloat16", "tie_word_embeddings": false}
        """

    /// TorchTitan's names and shapes, in its `named_parameters()` order.
    static let parameters: [(String, [Int])] = [
        ("tok_embeddings.weight", [4, 8]),
        ("layers.0.attention.wq.weight", [8, 8]), ("layers.0.attention.wk.weight", [4, 8]),
        ("layers.0.attention.wv.weight", [4, 8]), ("layers.0.attention.wo.weight", [8, 8]),
        ("layers.0.feed_forward.w1.weight", [4, 8]), ("layers.0.feed_forward.w2.weight", [8, 4]),
        ("layers.0.feed_forward.w3.weight", [4, 8]),
        ("layers.0.attention_norm.weight", [8]), ("layers.0.ffn_norm.weight", [8]),
        ("norm.weight", [8]), ("output.weight", [4, 8]),
    ]

    static func values(_ n: Int, _ base: Int, _ shape: [Int]) -> [Float] {
        (0..<shape.reduce(1, *)).map { Float(n * 1000 + base + $0) }
    }

    // MARK: Building a folder

    struct Chunk {
        var offsets: [Int]
        var sizes: [Int]
        var file = "__0_0.distcp"
    }

    /// A DCP folder, item by item.
    struct Folder {
        var entries: [(fqn: String, entry: DCPMetadata.Entry)] = []
        var locations: [DCPMetadata.Location] = []
        var files: [String: [UInt8]] = [:]

        /// A torch.save archive of `pickle` and its storages, as the DCP writer saves each item.
        static func archive(pickle: [UInt8], storages: [[UInt8]]) throws -> [UInt8] {
            try readWhole(TorchSaveFile.file(fileName: "archive.pt", pickle: pickle, storages: storages.map { [.literal($0)] },
                                             serializationID: String(repeating: "1", count: 40)))
        }

        mutating func store(_ fqn: String, _ archive: [UInt8], file: String, chunk: DCPMetadata.Chunk?, index: Int?) {
            let offset = files[file]?.count ?? 0
            files[file, default: []] += archive
            locations.append(DCPMetadata.Location(fqn: fqn, chunkOffsets: chunk?.offsets, chunkIndex: index,
                                                  relativePath: file, offset: offset, length: archive.count))
        }

        /// Tensor `fqn` of `shape`, row-major `values`, stored in `chunks`
        /// (each saved alone, as its own contiguous tensor).
        mutating func tensor(_ fqn: String, _ shape: [Int], _ values: [Float], chunks: [Chunk]? = nil,
                             dtype: DType = .float32) throws {
            let chunks = chunks ?? [Chunk(offsets: shape.map { _ in 0 }, sizes: shape)]
            let columns = shape.count == 2 ? shape[1] : 1
            var metadataChunks: [DCPMetadata.Chunk] = []
            for (index, c) in chunks.enumerated() {
                var data: [UInt8] = []
                let rows = shape.count == 2 ? c.offsets[0]..<c.offsets[0] + c.sizes[0] : 0..<1
                let cols = shape.count == 2 ? c.offsets[1]..<c.offsets[1] + c.sizes[1]
                    : shape.count == 1 ? c.offsets[0]..<c.offsets[0] + c.sizes[0] : 0..<1
                for r in rows {
                    for k in cols {
                        let v = values[r * columns + k]
                        data += dtype == .float16 ? le16(Int(Float16(v).bitPattern)) : le32(Int(v.bitPattern))
                    }
                }
                let pickle = PickleWriter.singleTensor(TensorDescription(dtype: dtype, shape: c.sizes))
                let chunk = DCPMetadata.Chunk(offsets: c.offsets, sizes: c.sizes)
                metadataChunks.append(chunk)
                store(fqn, try Folder.archive(pickle: pickle, storages: [data]), file: c.file, chunk: chunk, index: index)
            }
            entries.append((fqn, .tensor(DCPMetadata.TensorEntry(dtype: dtype, size: shape, chunks: metadataChunks))))
        }

        /// A bytes item: a Python value `pickle` (protocol 2, as torch.save writes it).
        mutating func bytes(_ fqn: String, _ pickle: [UInt8]) throws {
            store(fqn, try Folder.archive(pickle: pickle, storages: []), file: "__0_0.distcp", chunk: nil, index: nil)
            entries.append((fqn, .bytes))
        }

        func write(_ dir: Dir) throws {
            try dir.write("config.json", Array(DCPSourceTests.config.utf8))
            for (name, contents) in files { try dir.write(name, contents) }
            try dir.write(".metadata", DCPMetadata(entries: entries, plannerData: [], locations: locations).pickled())
        }
    }

    // Python values as torch.save's pickler writes them (protocol 2).
    static func float(_ v: Double) -> [UInt8] { [0x80, 0x02, 0x47] + withUnsafeBytes(of: v.bitPattern.bigEndian) { Array($0) } + [0x2E] }
    static func pair(_ a: Double, _ b: Double) -> [UInt8] {
        [0x80, 0x02, 0x47] + withUnsafeBytes(of: a.bitPattern.bigEndian) { Array($0) } + [0x47]
            + withUnsafeBytes(of: b.bitPattern.bigEndian) { Array($0) } + [0x86, 0x71, 0x00, 0x2E]
    }
    static func int(_ v: UInt8) -> [UInt8] { [0x80, 0x02, 0x4B, v, 0x2E] }
    static let none: [UInt8] = [0x80, 0x02, 0x4E, 0x2E]
    static func bool(_ b: Bool) -> [UInt8] { [0x80, 0x02, b ? 0x88 : 0x89, 0x2E] }

    /// wq in two row chunks in two files (rows 0..<3 and 3..<8: the cut
    /// falls inside head 0), the rest whole; with the optimizer when asked.
    static func folder(optimizer: Bool = false, wqChunks: [Chunk]? = nil) throws -> Folder {
        var f = Folder()
        for (n, (name, shape)) in parameters.enumerated() {
            let chunks = name == "layers.0.attention.wq.weight"
                ? wqChunks ?? [Chunk(offsets: [0, 0], sizes: [3, 8]), Chunk(offsets: [3, 0], sizes: [5, 8], file: "__1_0.distcp")]
                : nil
            try f.tensor(name, shape, values(n, 0, shape), chunks: chunks)
        }
        guard optimizer else { return f }
        for (n, (name, shape)) in parameters.enumerated() {
            try f.tensor("optimizer.state.\(name).step", [], [3])
            try f.tensor("optimizer.state.\(name).exp_avg", shape, values(n, 500, shape),
                         chunks: name == "layers.0.attention.wq.weight" ? [Chunk(offsets: [0, 0], sizes: [4, 8]), Chunk(offsets: [4, 0], sizes: [4, 8])] : nil)
            try f.tensor("optimizer.state.\(name).exp_avg_sq", shape, values(n, 800, shape))
        }
        for (name, _) in parameters {
            let g = "optimizer.param_groups.\(name)."
            try f.bytes(g + "lr", float(0.0007))
            try f.bytes(g + "betas", pair(0.9, 0.95))
            try f.bytes(g + "eps", float(1e-8))
            try f.bytes(g + "weight_decay", float(0.1))
            for key in ["amsgrad", "maximize", "capturable", "differentiable"] { try f.bytes(g + key, bool(false)) }
            for key in ["foreach", "fused"] { try f.bytes(g + key, none) }
            try f.bytes(g + "decoupled_weight_decay", bool(true))
            try f.bytes(g + "initial_lr", float(0.0008))
        }
        try f.bytes("lr_scheduler.last_epoch", int(3))
        try f.bytes("train_state.step", int(3))
        try f.bytes("train_state.ntokens_seen", int(96))
        try f.bytes("dataloader.dp_rank_0", none)
        return f
    }

    static func open(_ dir: Dir, weightsOnly: Bool = false, grouping: OptimizerGrouping? = nil) throws -> Checkpoint {
        try Checkpoint.open(dir.path, options: SourceOptions(config: dir.path + "/config.json", weightsOnly: weightsOnly,
                                                             optimizerGrouping: grouping))
    }

    /// The refusal opening `f` meets.
    static func refusal(_ f: Folder, weightsOnly: Bool = false, edit: (Dir) throws -> Void = { _ in }) throws -> String {
        let dir = try Dir()
        try f.write(dir)
        try edit(dir)
        let error = try #require(throws: ShardFSError.self) { try open(dir, weightsOnly: weightsOnly) }
        return error.description
    }

    // MARK: Reading what the source says

    /// The tensor's elements, read through its tiles.
    static func elements(_ t: SourceTensor, _ source: Checkpoint) throws -> [Float] {
        let whole = try readWhole(VirtualFile(extents: RowBlock(whole: t).extents(outputDType: .float32)), sources: source.files)
        return stride(from: 0, to: whole.count, by: 4).map { Float(bitPattern: UInt32(readLE(whole, $0, 4))) }
    }

    /// (file name, byte offset) of element (row, column) of `t`'s matrix view, from its tiles.
    static func place(_ t: SourceTensor, _ row: Int, _ column: Int, _ source: Checkpoint) -> (String, Int)? {
        guard let tile = t.tiles.first(where: { $0.rows.contains(row) && $0.columns.contains(column) }) else { return nil }
        return (source.files[tile.fileIndex].name,
                tile.offset + (row - tile.rows.lowerBound) * tile.rowStride + (column - tile.columns.lowerBound) * tile.elementStride)
    }

    /// Where the float `v` is stored in `file` (each value is stored once).
    static func offset(of v: Float, in dir: Dir, _ file: String) throws -> Int {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.path + "/" + file)))
        let needle = le32(Int(v.bitPattern))
        for i in 0...(data.count - 4) where Array(data[i..<i + 4]) == needle { return i }
        throw TestFailure("\(v) is not in \(file)")
    }

    /// Rows `rows` of TorchTitan's [rows, 8] parameter n, in that order.
    static func rows(_ n: Int, _ base: Int, _ rows: [Int]) -> [Float] {
        rows.flatMap { r in (0..<8).map { Float(n * 1000 + base + r * 8 + $0) } }
    }

    // MARK: Tests

    @Test func tensorsUnderHuggingFaceNamesWithWqAndWkUnpermuted() throws {
        let dir = try Dir()
        try DCPSourceTests.folder().write(dir)
        let source = try DCPSourceTests.open(dir)
        #expect(source.sourceLayout == nil)
        #expect(source.trainingState == nil)
        #expect(source.files.map(\.name) == [".metadata", "__0_0.distcp", "__1_0.distcp"])
        #expect(Set(source.tensors.keys) == [
            "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.norm.weight", "lm_head.weight",
        ])
        // Head dim 4: Hugging Face row h*4 + j*2 + i is TorchTitan row h*4 + 2i + j.
        let q = try #require(source.tensors["model.layers.0.self_attn.q_proj.weight"])
        #expect(q.shape == [8, 8] && q.dtype == .float32)
        #expect(try DCPSourceTests.elements(q, source) == DCPSourceTests.rows(1, 0, [0, 2, 1, 3, 4, 6, 5, 7]))
        let k = try #require(source.tensors["model.layers.0.self_attn.k_proj.weight"])
        #expect(try DCPSourceTests.elements(k, source) == DCPSourceTests.rows(2, 0, [0, 2, 1, 3]))
        // Not permuted: v, the MLP (gate is w1, up w3, down w2), the head.
        #expect(try DCPSourceTests.elements(try #require(source.tensors["model.layers.0.self_attn.v_proj.weight"]), source)
                == DCPSourceTests.rows(3, 0, [0, 1, 2, 3]))
        #expect(try DCPSourceTests.elements(try #require(source.tensors["model.layers.0.mlp.up_proj.weight"]), source)
                == DCPSourceTests.rows(7, 0, [0, 1, 2, 3]))
        #expect(try DCPSourceTests.elements(try #require(source.tensors["model.layers.0.mlp.down_proj.weight"]), source)
                == (0..<32).map { Float(6000 + $0) })
        #expect(try DCPSourceTests.elements(try #require(source.tensors["model.norm.weight"]), source) == (0..<8).map { Float(10000 + $0) })

        // Where q_proj's elements are: HF row 1 is TT row 2 (chunk 0, in
        // __0_0.distcp); HF row 3 is TT row 3 (the first row of chunk 1, in
        // __1_0.distcp); HF row 5 is TT row 6.
        let p = DCPSourceTests.place
        let (at1016, at1024, at1050) = (try DCPSourceTests.offset(of: 1016, in: dir, "__0_0.distcp"),
                                        try DCPSourceTests.offset(of: 1024, in: dir, "__1_0.distcp"),
                                        try DCPSourceTests.offset(of: 1050, in: dir, "__1_0.distcp"))
        #expect(p(q, 1, 0, source)! == ("__0_0.distcp", at1016))
        #expect(p(q, 3, 0, source)! == ("__1_0.distcp", at1024))
        #expect(p(q, 5, 2, source)! == ("__1_0.distcp", at1050))
        #expect(p(q, 5, 2, source)!.1 == p(q, 3, 0, source)!.1 + 3 * 32 + 2 * 4)
        // Every other TorchTitan row: a half-head is a tile of twice the row stride.
        #expect(q.tiles.allSatisfy { $0.rowStride == 64 && $0.elementStride == 4 })
        // A tensor in one chunk is contiguous at its chunk's data.
        let embed = try #require(source.tensors["model.embed_tokens.weight"])
        let second = try DCPSourceTests.offset(of: 1, in: dir, "__0_0.distcp")
        #expect(embed.tiles.isEmpty && embed.offset + 4 == second)
    }

    @Test func hfPlanOfTheWeightsReadsNoOptimizer() throws {
        let dir = try Dir()
        try DCPSourceTests.folder(optimizer: true).write(dir)
        let weights = try DCPSourceTests.open(dir, weightsOnly: true)
        #expect(weights.trainingState == nil)
        let plan = try LayoutPlanner.plan(checkpoint: weights, options: LayoutOptions(format: .hf))
        #expect(plan.huggingFaceTensors.count == 12 && plan.dtype == .float32)
    }

    @Test func trainingStateAsNxDsZeroOneKeepsIt() throws {
        let dir = try Dir()
        try DCPSourceTests.folder(optimizer: true).write(dir)
        let source = try DCPSourceTests.open(dir)
        let state = try #require(source.trainingState)
        #expect(state.fromDCP && state.dpSize == 1 && state.modelDType == .float32 && !state.xser)
        #expect(state.keys == ["state", "param_groups", "base_state", "shape_info", "sharded_master_weights"])
        #expect(state.grouping == .examples)
        #expect(state.stateEntries.map(\.key) == ["step", "exp_avg", "exp_avg_sq"])
        #expect(state.stateEntries[0].constant == .plain(.int(3)))
        #expect(state.stateEntries[1].constant == nil && state.stateEntries[2].constant == nil)
        func group(_ decay: Double) -> OptimizerGroupSettings {
            OptimizerGroupSettings(settings: [
                PickleValue.Item(key: .string("weight_decay"), value: .float(decay)), PickleValue.Item(key: .string("lr"), value: .float(0.0007)),
                PickleValue.Item(key: .string("betas"), value: .list([.float(0.9), .float(0.95)])),
                PickleValue.Item(key: .string("eps"), value: .float(1e-8)), PickleValue.Item(key: .string("correct_bias"), value: .bool(true)),
                PickleValue.Item(key: .string("capturable"), value: .bool(false)),
            ], paramsPosition: 6)
        }
        #expect(state.groups == [group(0.1), group(0.0)])
        #expect(state.carried.map(\.path) == ["checkpoint", "done"] && state.carried.allSatisfy { $0.bytes == Array("1".utf8) })
        // exp_avg of wq, in two row chunks, un-permuted like the weight.
        let m = try #require(state.stateTensors["exp_avg"]?["model.layers.0.self_attn.q_proj.weight"])
        #expect(try DCPSourceTests.elements(m, source) == DCPSourceTests.rows(1, 500, [0, 2, 1, 3, 4, 6, 5, 7]))
        let v = try #require(state.stateTensors["exp_avg_sq"]?["model.layers.0.self_attn.k_proj.weight"])
        #expect(try DCPSourceTests.elements(v, source) == DCPSourceTests.rows(2, 800, [0, 2, 1, 3]))
        #expect(state.masterWeights?["model.layers.0.self_attn.q_proj.weight"] == source.tensors["model.layers.0.self_attn.q_proj.weight"])
        #expect(state.notes.contains { $0.contains("scheduler.pt") && $0.contains("scheduler=None") && $0.contains("global_step = 3") })
        #expect(state.notes.contains { $0.contains("dataloader.dp_rank_0") })
        #expect(state.notes.contains { $0.contains("weight_decay 0.1") })
        #expect(state.sourceIndexes.count == 1 && state.sourceIndexes[0].keys.first == "model.embed_tokens.weight")
    }

    /// Master weights (the fp32 model) for every target dtype: an NxD that
    /// loads the optimizer before the model resumes from them.
    @Test func planNeedsTheDPSizeAndAlwaysKeepsMasterWeights() throws {
        let dir = try Dir()
        try DCPSourceTests.folder(optimizer: true).write(dir)
        let source = try DCPSourceTests.open(dir)
        let missing = try #require(throws: ShardFSError.self) { try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2)) }
        #expect(missing.description.hasPrefix("--dp-size: missing"))

        var o = LayoutOptions(tpSize: 2)
        o.dpSize = 2
        let fp32 = try LayoutPlanner.plan(checkpoint: source, options: o)
        #expect(fp32.dtype == .float32)
        #expect(fp32.optimizer?.state.masterWeights?.count == 12)
        #expect(fp32.optimizer?.state.keys == ["state", "param_groups", "base_state", "shape_info", "sharded_master_weights"])
        #expect(fp32.optimizer?.files.count == 4)

        o.dtype = .bfloat16
        let bf16 = try LayoutPlanner.plan(checkpoint: source, options: o)
        let dtypes = Dictionary(uniqueKeysWithValues: bf16.files[0].tensors.map { ($0.key, $0.dtype) })
        #expect(dtypes["model.layers.0.input_layernorm.weight"] == .float32)
        #expect(dtypes["model.layers.0.post_attention_layernorm.weight"] == .float32)
        #expect(dtypes["model.norm.weight"] == .float32)
        #expect(dtypes["model.layers.0.self_attn.q_proj.weight"] == .bfloat16 && dtypes["lm_head.weight"] == .bfloat16)
        #expect(bf16.optimizer?.state.keys.last == "sharded_master_weights")
        #expect(bf16.optimizer?.files.first?.parameters.first?.master?.dtype == .float32)
        // Two groups by NxD's examples' rule: the norms last, in group 1.
        #expect(bf16.optimizer?.files.first?.groupSizes == [8, 3])
    }

    // MARK: Refusals, by name

    @Test func overlappingChunksAreRefused() throws {
        let f = try DCPSourceTests.folder(wqChunks: [Chunk(offsets: [0, 0], sizes: [4, 8]), Chunk(offsets: [2, 0], sizes: [6, 8])])
        let message = try DCPSourceTests.refusal(f)
        #expect(message == ".metadata: tensor layers.0.attention.wq.weight: chunks 0 (rows 0..<4) and 1 (rows 2..<8) overlap in rows 2..<4")
    }

    @Test func chunksLeavingAHoleAreRefused() throws {
        let f = try DCPSourceTests.folder(wqChunks: [Chunk(offsets: [0, 0], sizes: [3, 8]), Chunk(offsets: [5, 0], sizes: [3, 8])])
        let message = try DCPSourceTests.refusal(f)
        #expect(message.hasPrefix(".metadata: tensor layers.0.attention.wq.weight: rows 3..<5 are in no chunk"))
        let columns = try DCPSourceTests.folder(wqChunks: [Chunk(offsets: [0, 0], sizes: [8, 4]), Chunk(offsets: [0, 4], sizes: [6, 4])])
        #expect(try DCPSourceTests.refusal(columns).hasPrefix(".metadata: tensor layers.0.attention.wq.weight: rows 6..<8, columns 4..<8 are in no chunk"))
    }

    @Test func aChunkBeyondItsFileIsRefused() throws {
        let message = try DCPSourceTests.refusal(try DCPSourceTests.folder()) { dir in
            let path = dir.path + "/__1_0.distcp"
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            try data.prefix(data.count - 10).write(to: URL(fileURLWithPath: path))
        }
        #expect(message.hasPrefix("__1_0.distcp: is "))
        #expect(message.contains("stores chunk 1 of layers.0.attention.wq.weight at bytes 0..<"))
    }

    @Test func aMissingFileIsRefused() throws {
        let message = try DCPSourceTests.refusal(try DCPSourceTests.folder()) { dir in
            try FileManager.default.removeItem(atPath: dir.path + "/__1_0.distcp")
        }
        #expect(message.hasPrefix("__1_0.distcp: missing from "))
        #expect(message.hasSuffix(".metadata stores layers.0.attention.wq.weight in it"))
    }

    @Test func truncatedMetadataIsRefused() throws {
        let message = try DCPSourceTests.refusal(try DCPSourceTests.folder()) { dir in
            let path = dir.path + "/.metadata"
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        }
        #expect(message.hasPrefix(".metadata: truncated"))
    }

    @Test func anArchiveThatIsNotTheChunkIsRefused() throws {
        // The metadata says wk's chunk is [4, 8]; its archive holds [4, 4].
        var f = try DCPSourceTests.folder()
        let location = f.locations.firstIndex { $0.fqn == "layers.0.attention.wk.weight" }!
        let wrong = try Folder.archive(pickle: PickleWriter.singleTensor(TensorDescription(dtype: .float32, shape: [4, 4])),
                                       storages: [[UInt8](repeating: 0, count: 64)])
        let l = f.locations[location]
        f.files["__0_0.distcp"]! += wrong
        f.locations[location] = DCPMetadata.Location(fqn: l.fqn, chunkOffsets: l.chunkOffsets, chunkIndex: l.chunkIndex, relativePath: l.relativePath,
                                                     offset: f.files["__0_0.distcp"]!.count - wrong.count, length: wrong.count)
        let message = try DCPSourceTests.refusal(f)
        #expect(message.hasPrefix("__0_0.distcp (layers.0.attention.wk.weight, chunk 0, bytes "))
        #expect(message.hasSuffix("holds a tensor of shape [4, 4], but .metadata says chunk 0 of layers.0.attention.wk.weight is [4, 8] at [0, 0]"))
        // An archive cut short of its length is no zip archive there.
        var cut = try DCPSourceTests.folder()
        let w = cut.locations.firstIndex { $0.fqn == "layers.0.attention.wv.weight" }!
        let lw = cut.locations[w]
        cut.locations[w] = DCPMetadata.Location(fqn: lw.fqn, chunkOffsets: lw.chunkOffsets, chunkIndex: lw.chunkIndex, relativePath: lw.relativePath,
                                                offset: lw.offset, length: lw.length - 1)
        #expect(try DCPSourceTests.refusal(cut).contains("(layers.0.attention.wv.weight, chunk 0, bytes"))
    }

    @Test func dtypeOrShapeAgainstTheConfigIsRefused() throws {
        var f = Folder()
        for (n, (name, shape)) in DCPSourceTests.parameters.enumerated() {
            try f.tensor(name, shape, DCPSourceTests.values(n, 0, shape), dtype: name == "layers.0.attention.wv.weight" ? .float16 : .float32)
        }
        #expect(try DCPSourceTests.refusal(f) == "tensor layers.0.attention.wv.weight: is float16 in the DCP checkpoint, neither float32 (TorchTitan's parameters) nor config.json's torch_dtype (bfloat16): is --config the model's own?")

        var g = Folder()
        for (n, (name, shape)) in DCPSourceTests.parameters.enumerated() {
            let s = name == "layers.0.feed_forward.w2.weight" ? [4, 8] : shape
            try g.tensor(name, s, DCPSourceTests.values(n, 0, s))
        }
        #expect(try DCPSourceTests.refusal(g) == "tensor layers.0.feed_forward.w2.weight: has the size [4, 8] in the DCP checkpoint, but config.json implies [8, 4] ([hidden_size, intermediate_size]) for it (model.layers.0.mlp.down_proj.weight)")
    }

    @Test func unknownAndMissingEntriesAreRefused() throws {
        var f = try DCPSourceTests.folder()
        try f.bytes("extra_state.foo", DCPSourceTests.int(1))
        #expect(try DCPSourceTests.refusal(f).hasPrefix(".metadata: extra_state.foo is neither a parameter of TorchTitan's Llama3"))

        var layer = try DCPSourceTests.folder()
        try layer.tensor("layers.1.attention_norm.weight", [8], DCPSourceTests.values(20, 0, [8]))
        #expect(try DCPSourceTests.refusal(layer).contains("layers.1.attention_norm.weight is a parameter of layer 1, but config.json says num_hidden_layers = 1"))

        var missing = try DCPSourceTests.folder()
        let i = missing.entries.firstIndex { $0.fqn == "norm.weight" }!
        missing.entries.remove(at: i)
        missing.locations.removeAll { $0.fqn == "norm.weight" }
        #expect(try DCPSourceTests.refusal(missing).hasPrefix("tensor model.norm.weight: missing from the DCP checkpoint: it holds no norm.weight"))
    }

    @Test func optimizerStateThatNxDCannotKeepIsRefused() throws {
        // Steps that differ.
        var f = try DCPSourceTests.folder(optimizer: true)
        let l = f.locations.firstIndex { $0.fqn == "optimizer.state.norm.weight.step" }!
        let other = try Folder.archive(pickle: PickleWriter.singleTensor(TensorDescription(dtype: .float32, shape: [])),
                                       storages: [le32(Int(Float(4).bitPattern))])
        f.files["__0_0.distcp"]! += other
        let old = f.locations[l]
        f.locations[l] = DCPMetadata.Location(fqn: old.fqn, chunkOffsets: old.chunkOffsets, chunkIndex: old.chunkIndex, relativePath: old.relativePath,
                                              offset: f.files["__0_0.distcp"]!.count - other.count, length: other.count)
        let steps = try DCPSourceTests.refusal(f)
        #expect(steps.hasPrefix("__0_0.distcp (optimizer.state.norm.weight.step, bytes "))
        #expect(steps.hasSuffix("): is 4, but optimizer.state.tok_embeddings.weight.step is 3: NxD's optimizer keeps one step for every parameter (one run, one step count)"))
        // The weights alone are still read.
        let dir = try Dir()
        try f.write(dir)
        #expect(try DCPSourceTests.open(dir, weightsOnly: true).tensors.count == 12)

        // AMSGrad's state.
        var ams = try DCPSourceTests.folder(optimizer: true)
        try ams.tensor("optimizer.state.norm.weight.max_exp_avg_sq", [8], DCPSourceTests.values(10, 900, [8]))
        #expect(try DCPSourceTests.refusal(ams).hasPrefix(".metadata: optimizer.state.norm.weight.max_exp_avg_sq: ShardFS maps AdamW's state"))
    }
}
