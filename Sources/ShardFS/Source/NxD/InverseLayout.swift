/// The layout an NxD checkpoint was written in, read back from its rank
/// files and `config.json`, and its Hugging Face tensors as tiles of those
/// files (docs/formats/nxd-layout.md, inverted).
///
/// Inversion reuses the forward planner: once TP, PP, virtual PP, the KV
/// multiplier, qkv_linear, fuse_qkv and the backend are inferred, the plan of
/// that layout says, for every key of every rank file, which rectangles of
/// which Hugging Face tensors it holds, stacked in which order. Each such
/// rectangle of a piece becomes a tile of its tensor; of the copies the
/// layout replicates (K/V heads under a KV multiplier, the norms every TP
/// rank holds, a tied lm_head), the first the plan places is kept. So the
/// inverse is exact wherever the forward layout is, by construction.
struct InverseLayout {
    let options: LayoutOptions
    /// The Hugging Face tensors, by name, each in tiles of the rank files.
    let tensors: [String: SourceTensor]
    /// The forward plan of the inferred layout: what `tiles` inverts, kept
    /// to invert the optimizer state of the same rank files too.
    let plan: LayoutPlan

    /// `ranks`: tp-major, `tpSize` x `ppSize` of them (`NxDRankFiles.ranks`,
    /// or the master weights of a tag whose model files hold no data).
    init(config c: ModelConfig, ranks: [NxDRankFiles.Rank], tpSize T: Int, ppSize P: Int,
         backend: HardwareBackend?) throws(ShardFSError) {
        let layersOfRank = try InverseLayout.layersOfPipelineRanks(ranks, ppSize: P)
        let virtualPP = try InverseLayout.virtualPPSize(layers: c.layers, ppSize: P, observed: layersOfRank, ranks: ranks)
        let keys = Set(ranks.flatMap { $0.pieces.map(\.key) })
        let qkvLinear = keys.contains { $0.hasSuffix(".self_attn.qkv_proj.weight_q") || $0.hasSuffix(".self_attn.qkv_proj.weight_qkv") }
        let fuseQKV = keys.contains { $0.hasSuffix(".self_attn.qkv_proj.weight_qkv") }
        let multiplier = qkvLinear ? try InverseLayout.kvMultiplier(config: c, ranks: ranks, tpSize: T, fused: fuseQKV) : 1
        var options = LayoutOptions(tpSize: T, ppSize: P, virtualPPSize: virtualPP, kvSizeMultiplier: multiplier,
                                    qkvLinear: qkvLinear, fuseQKV: fuseQKV)
        options.backend = try InverseLayout.backend(config: c, options: options, given: backend)
        plan = try InverseLayout.forwardPlan(config: c, options: options)
        tensors = try InverseLayout.tiles(plan: plan, ranks: ranks, config: c)
        let dtypes = Set(tensors.values.map(\.dtype))
        options.dtype = dtypes.count == 1 ? dtypes.first : nil
        self.options = options
    }

    /// Layer numbers each pipeline rank holds (from TP rank 0's keys); every
    /// other TP rank of that pipeline rank must hold the same keys.
    static func layersOfPipelineRanks(_ ranks: [NxDRankFiles.Rank], ppSize: Int) throws(ShardFSError) -> [[Int]] {
        var layers = [[Int]](repeating: [], count: ppSize)
        var first: [Int: NxDRankFiles.Rank] = [:]
        for rank in ranks {
            guard let reference = first[rank.pp] else {
                first[rank.pp] = rank
                layers[rank.pp] = Set(rank.pieces.compactMap { layerNumber($0.key) }).sorted()
                continue
            }
            let mine = Set(rank.pieces.map(\.key)), theirs = Set(reference.pieces.map(\.key))
            if let extra = mine.subtracting(theirs).sorted().first {
                throw ShardFSError.badSource(file: rank.path, reason: "holds key \(extra), which \(reference.path) (the same pipeline rank) does not")
            }
            if let missing = theirs.subtracting(mine).sorted().first {
                throw ShardFSError.badSource(file: rank.path, reason: "lacks key \(missing), which \(reference.path) (the same pipeline rank) holds")
            }
        }
        return layers
    }

    static func layerNumber(_ key: String) -> Int? { LlamaWeights.layerNumber(key) }

    /// The virtual PP size whose split of the config's layers matches what the
    /// pipeline ranks hold.
    static func virtualPPSize(layers: Int, ppSize: Int, observed: [[Int]], ranks: [NxDRankFiles.Rank]) throws(ShardFSError) -> Int {
        let held = Set(observed.flatMap { $0 })
        if let extra = held.filter({ $0 >= layers }).min(), let rank = ranks.first(where: { r in r.pieces.contains { layerNumber($0.key) == extra } }) {
            throw ShardFSError.badSource(
                file: rank.path, reason: "holds layer \(extra), but config.json has num_hidden_layers = \(layers) (is --config the model's own?)")
        }
        // Now every layer held is below `layers`: if there are fewer than
        // `layers` of them, one is missing (and `layers` is at most what the
        // files hold, so the search below is bounded by them).
        if held.count < layers {
            let missing = (0..<held.count + 1).first { !held.contains($0) } ?? held.count
            throw ShardFSError.badSource(
                file: "model/", reason: "no rank file holds layer \(missing), which config.json (num_hidden_layers = \(layers)) needs")
        }
        if ppSize <= layers {
            for candidate in 1...max(1, layers / ppSize) {
                let split = try? LayoutPlanner.pipelineLayers(layers: layers, options: LayoutOptions(ppSize: ppSize, virtualPPSize: candidate))
                if split == observed { return candidate }
            }
        }
        let description = observed.enumerated().map { "pp \($0.offset): \($0.element.count) layers" }.joined(separator: ", ")
        throw ShardFSError.badSource(
            file: "model/", reason: "the pipeline ranks' layers (\(description)) are not NxD's split of \(layers) layers for any virtual pipeline size")
    }

    /// m from the K rows a rank holds: T ranks share Hkv * m heads.
    static func kvMultiplier(config c: ModelConfig, ranks: [NxDRankFiles.Rank], tpSize T: Int, fused: Bool) throws(ShardFSError) -> Int {
        let d = c.headDim, queryRows = c.heads / max(1, T) * d
        for rank in ranks {
            for (key, piece) in rank.pieces {
                let rows = piece.shape.first ?? 0
                let kvRows: Int
                if fused, key.hasSuffix(".self_attn.qkv_proj.weight_qkv") {
                    guard rows > queryRows, (rows - queryRows) % 2 == 0 else {
                        throw ShardFSError.badSource(file: rank.path, reason: "\(key) has shape \(piece.shape), which no KV multiplier explains for config.json's heads")
                    }
                    kvRows = (rows - queryRows) / 2
                } else if !fused, key.hasSuffix(".self_attn.qkv_proj.weight_k") {
                    kvRows = rows
                } else {
                    continue
                }
                let (total, overflow) = kvRows.multipliedReportingOverflow(by: T)
                let perHead = c.kvHeads * d
                guard !overflow, perHead > 0, total % perHead == 0, total / perHead >= 1 else {
                    throw ShardFSError.badSource(
                        file: rank.path, reason: "\(key) has \(kvRows) K rows per rank, which is not num_key_value_heads (\(c.kvHeads)) x head_dim (\(d)) x a KV multiplier / tp-size \(T)")
                }
                return total / perHead
            }
        }
        throw ShardFSError.badSource(file: "model/", reason: "no rank file holds a K projection (qkv_proj.weight_k or weight_qkv)")
    }

    /// trn1 or trn2: the one thing files cannot tell. Needed only when both
    /// are possible for this layout and they place heads differently.
    static func backend(config c: ModelConfig, options: LayoutOptions, given: HardwareBackend?) throws(ShardFSError) -> HardwareBackend {
        var cutters: [HardwareBackend: TensorCutter] = [:]
        var refusals: [HardwareBackend: ShardFSError] = [:]
        for backend in HardwareBackend.allCases {
            var o = options
            o.backend = backend
            do throws(ShardFSError) { cutters[backend] = try TensorCutter(config: c, options: o) } catch { refusals[backend] = error }
        }
        if let given {
            if let refusal = refusals[given] {
                throw ShardFSError.badLayout(flag: "--source-hw-backend", reason: "\(given.rawValue) cannot have written this tag (\(options.summary)): \(refusal)")
            }
            return given
        }
        switch (cutters[.trn1], cutters[.trn2]) {
        case let (trn1?, trn2?):
            guard options.qkvLinear else { return .trn1 }
            let same = (0..<options.tpSize).allSatisfy { r in
                trn1.firstQueryHead(r) == trn2.firstQueryHead(r) && trn1.kvRowSources(r) == trn2.kvRowSources(r)
            }
            if same { return .trn1 }
            throw ShardFSError.badLayout(
                flag: "--source-hw-backend",
                reason: "needed: this tag's layout (tp \(options.tpSize), kv multiplier \(options.kvSizeMultiplier), \(options.fuseQKV ? "fused " : "")qkv_linear) places attention heads differently on trn1 and trn2, and its files cannot tell which wrote them; say --source-hw-backend trn1 or trn2")
        case (_?, nil): return .trn1
        case (nil, _?): return .trn2
        case (nil, nil):
            throw refusals[.trn1].map { ShardFSError.badSource(file: "model/", reason: "its layout (\(options.summary)) is not one NxD writes: \($0)") }
                ?? ShardFSError.badSource(file: "model/", reason: "its layout is not one NxD writes")
        }
    }

    /// The forward plan of `options` over stand-in tensors with the config's
    /// shapes: only its keys, shapes and blocks are used.
    static func forwardPlan(config c: ModelConfig, options: LayoutOptions) throws(ShardFSError) -> LayoutPlan {
        var standIns: [String: SourceTensor] = [:]
        for e in try LlamaWeights.expectedTensors(c) {
            standIns[e.name] = SourceTensor(name: e.name, dtype: .float32, shape: e.shape, fileIndex: 0, offset: 0)
        }
        var o = options
        o.dtype = .float32
        o.format = .pt
        return try LayoutPlanner.plan(config: c, weights: try LlamaWeights(config: c, tensors: standIns), options: o)
    }

    /// Matches every rank file against its planned keys and shapes, and turns
    /// each planned block into a tile of its Hugging Face tensor.
    static func tiles(plan: LayoutPlan, ranks: [NxDRankFiles.Rank], config c: ModelConfig) throws(ShardFSError) -> [String: SourceTensor] {
        var tiles: [String: [TensorTile]] = [:]
        var dtypeOf: [String: (dtype: DType, path: String, key: String)] = [:]
        var shapeOf: [String: [Int]] = [:]
        for e in try LlamaWeights.expectedTensors(c) { shapeOf[e.name] = e.shape }
        let layout = plan.options.summary.replacingOccurrences(of: " float32", with: "")
        for (file, rank) in zip(plan.files, ranks) {
            guard file.tpRank == rank.tp && file.ppRank == rank.pp else {
                throw ShardFSError.badSource(file: rank.path, reason: "is not the rank file the inferred layout (\(layout)) expects here (tp \(file.tpRank), pp \(file.ppRank))")
            }
            var pieces: [String: RankPiece] = [:]
            for (key, piece) in rank.pieces {
                guard pieces.updateValue(piece, forKey: key) == nil else {
                    throw ShardFSError.badSource(file: rank.path, reason: "holds key \(key) twice")
                }
            }
            let planned = Set(file.tensors.map(\.key))
            if let extra = rank.pieces.map(\.key).first(where: { !planned.contains($0) }) {
                throw ShardFSError.badSource(
                    file: rank.path, reason: "holds key \(extra), which config.json and the inferred layout (\(layout)) do not explain")
            }
            for tensor in file.tensors {
                guard let piece = pieces[tensor.key] else {
                    throw ShardFSError.badSource(
                        file: rank.path, reason: "lacks key \(tensor.key), which config.json and the inferred layout (\(layout)) need")
                }
                guard piece.shape == tensor.shape else {
                    throw ShardFSError.badSource(
                        file: rank.path, reason: "\(tensor.key) has shape \(piece.shape) but config.json and the inferred layout (\(layout)) imply \(tensor.shape)")
                }
                guard (1...2).contains(piece.shape.count), piece.segments.allSatisfy({ $0.strides.count == piece.shape.count }) else {
                    throw ShardFSError.badSource(file: rank.path, reason: "\(tensor.key) has \(piece.shape.count) dimensions; Llama weights have 1 or 2")
                }
                // Blocks stack along the piece's dim 0: rows of a matrix,
                // elements of a 1-D piece (a block of one is one row of columns).
                let twoD = piece.shape.count == 2, size = piece.dtype.size
                var position = 0
                for block in tensor.blocks {
                    let name = block.tensor.name
                    let length = twoD ? block.rows.count : block.columns.count
                    defer { position += length }
                    if let seen = dtypeOf[name], seen.dtype != piece.dtype {
                        throw ShardFSError.badSource(
                            file: rank.path, reason: "\(tensor.key) is \(piece.dtype.rawValue) but \(seen.path) holds \(seen.key) (the same tensor \(name)) as \(seen.dtype.rawValue): ranks disagree on its dtype")
                    }
                    dtypeOf[name] = dtypeOf[name] ?? (piece.dtype, rank.path, tensor.key)
                    let covered = tiles[name, default: []]
                    if covered.contains(where: { $0.rows.overlaps(block.rows) && $0.columns.overlaps(block.columns) }) {
                        // A replica (a K/V head under a multiplier, a norm on
                        // every TP rank, a tied lm_head): the first one placed
                        // stays. Replicas are placed whole, never in part.
                        let overlap = covered.reduce(0) { $0 + $1.rows.clamped(to: block.rows).count * $1.columns.clamped(to: block.columns).count }
                        guard overlap == block.elementCount else {
                            throw ShardFSError.badSource(
                                file: rank.path, reason: "\(tensor.key) holds part of \(name) that other rank files hold in part: the inferred layout (\(layout)) cannot have written it")
                        }
                        continue
                    }
                    // One tile per segment the block reaches (a model piece is
                    // one segment; an optimizer's state one per DP shard).
                    for segment in piece.segments {
                        let low = max(position, segment.first), high = min(position + length, segment.first + segment.count)
                        guard low < high else { continue }
                        let elementStride = segment.strides[segment.strides.count - 1] * size
                        let rowStride = twoD ? segment.strides[0] * size : 0
                        let within = low - segment.first, from = low - position, to = high - position
                        if twoD {
                            tiles[name, default: []].append(TensorTile(
                                rows: block.rows.lowerBound + from..<block.rows.lowerBound + to, columns: block.columns, fileIndex: segment.file,
                                offset: segment.offset + within * rowStride, rowStride: rowStride, elementStride: elementStride))
                        } else {
                            tiles[name, default: []].append(TensorTile(
                                rows: block.rows, columns: block.columns.lowerBound + from..<block.columns.lowerBound + to, fileIndex: segment.file,
                                offset: segment.offset + within * elementStride, rowStride: 0, elementStride: elementStride))
                        }
                    }
                }
            }
        }
        var tensors: [String: SourceTensor] = [:]
        for (name, pieces) in tiles {
            guard let shape = shapeOf[name], let dtype = dtypeOf[name]?.dtype else {
                throw ShardFSError.badTensor(name: name, reason: "placed by the inferred layout (\(layout)) but not a tensor config.json implies")
            }
            let (rows, columns) = RowBlock.matrixShape(shape)
            guard pieces.reduce(0, { $0 + $1.rows.count * $1.columns.count }) == rows * columns else {
                throw ShardFSError.badTensor(name: name, reason: "the tag's rank files do not cover it exactly once in the inferred layout (\(layout))")
            }
            tensors[name] = SourceTensor(name: name, dtype: dtype, shape: shape, tiles: pieces)
        }
        return tensors
    }
}

extension InverseLayout {
    /// The dtype `ranks` (the model files, tp-major as `plan.files`) hold
    /// each Hugging Face tensor of `plan` in, from their keys' dtypes: also
    /// when the files hold no data (their `.info.pt` names the dtypes).
    /// Per tensor, as a run keeps them; the ranks must agree on each.
    static func heldDTypes(plan: LayoutPlan, ranks: [NxDRankFiles.Rank]) throws(ShardFSError) -> [String: DType] {
        var held: [String: (dtype: DType, path: String, key: String)] = [:]
        for (file, rank) in zip(plan.files, ranks) {
            let dtypes = Dictionary(rank.keys.map { ($0.key, $0.dtype) }, uniquingKeysWith: { first, _ in first })
            for tensor in file.tensors {
                guard let dtype = dtypes[tensor.key] else { continue }
                for name in tensor.blocks.map(\.tensor.name) {
                    if let seen = held[name], seen.dtype != dtype {
                        throw ShardFSError.badSource(
                            file: rank.path, reason: "\(tensor.key) is \(dtype.rawValue) but \(seen.path) holds \(seen.key) (the same tensor \(name)) as \(seen.dtype.rawValue): ranks disagree on its dtype")
                    }
                    held[name] = held[name] ?? (dtype, rank.path, tensor.key)
                }
            }
        }
        return held.mapValues(\.dtype)
    }
}

extension TensorCutter {
    /// For each K/V row rank r holds, the source row it copies.
    func kvRowSources(_ r: Int) -> [Int] {
        let stand = SourceTensor(name: "k", dtype: .float32, shape: [config.kvHeads * config.headDim, config.hidden], fileIndex: 0, offset: 0)
        return ((try? kvRows(stand, r)) ?? []).flatMap { Array($0.rows) }
    }
}
