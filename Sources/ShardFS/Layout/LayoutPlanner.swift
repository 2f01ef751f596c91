/// Turns a checked model and a layout into the list of rank files, exactly as
/// `docs/formats/nxd-layout.md` describes NxD's converter. Every layout the
/// spec refuses is refused here, before anything is read or written.
public enum LayoutPlanner {
    public static func plan(config c: ModelConfig, weights w: LlamaWeights, options o: LayoutOptions) throws(ShardFSError) -> LayoutPlan {
        let dtype = try outputDType(config: c, weights: w, options: o)
        let cut = try TensorCutter(config: c, options: o)
        var warnings: [String] = []
        if o.kvSizeMultiplier > 1 && !o.qkvLinear {
            warnings.append("--kv-size-multiplier \(o.kvSizeMultiplier) has no effect without --qkv-linear (as in NxD's converter): K and V are cut, not replicated")
        }
        let layersOfRank = try pipelineLayers(layers: c.layers, options: o)
        try checkFileCount(o)

        var files: [RankFile] = []
        for tp in 0..<o.tpSize {
            for pp in 0..<o.ppSize {
                var tensors: [PlannedTensor] = []
                var fused: [PlannedTensor] = []
                func add(_ key: String, _ blocks: [RowBlock], shapeOf source: SourceTensor) {
                    tensors.append(PlannedTensor(key: key, dtype: dtype, shape: stackedShape(blocks, like: source), blocks: blocks))
                }
                if pp == 0 { add("model.embed_tokens.weight", try cut.rows(w.embed, tp), shapeOf: w.embed) }
                for n in layersOfRank[pp] {
                    let layer = w.layers[n]
                    let p = "model.layers.\(n)."
                    if o.qkvLinear {
                        let q = try cut.queryRows(layer.q, tp), k = try cut.kvRows(layer.k, tp), v = try cut.kvRows(layer.v, tp)
                        if o.fuseQKV {
                            fused.append(PlannedTensor(key: p + "self_attn.qkv_proj.weight_qkv", dtype: dtype,
                                                       shape: stackedShape(q + k + v, like: layer.q), blocks: q + k + v))
                        } else {
                            add(p + "self_attn.qkv_proj.weight_q", q, shapeOf: layer.q)
                            add(p + "self_attn.qkv_proj.weight_k", k, shapeOf: layer.k)
                            add(p + "self_attn.qkv_proj.weight_v", v, shapeOf: layer.v)
                        }
                        add(p + "self_attn.o_proj.weight", try cut.outputColumns(layer.o, tp), shapeOf: layer.o)
                    } else {
                        add(p + "self_attn.q_proj.weight", try cut.rows(layer.q, tp), shapeOf: layer.q)
                        add(p + "self_attn.k_proj.weight", try cut.rows(layer.k, tp), shapeOf: layer.k)
                        add(p + "self_attn.v_proj.weight", try cut.rows(layer.v, tp), shapeOf: layer.v)
                        add(p + "self_attn.o_proj.weight", try cut.columns(layer.o, tp), shapeOf: layer.o)
                    }
                    add(p + "mlp.gate_up_proj.weight", try cut.rows(layer.gate, tp) + cut.rows(layer.up, tp), shapeOf: layer.gate)
                    add(p + "mlp.down_proj.weight", try cut.columns(layer.down, tp), shapeOf: layer.down)
                    add(p + "input_layernorm.weight", [RowBlock(whole: layer.inputNorm)], shapeOf: layer.inputNorm)
                    add(p + "post_attention_layernorm.weight", [RowBlock(whole: layer.postAttentionNorm)], shapeOf: layer.postAttentionNorm)
                }
                if pp == o.ppSize - 1 {
                    add("model.norm.weight", [RowBlock(whole: w.norm)], shapeOf: w.norm)
                    add("lm_head.weight", try cut.rows(w.lmHead, tp), shapeOf: w.lmHead)
                }
                files.append(RankFile(tpRank: tp, ppRank: pp, tensors: tensors + fused))
            }
        }
        return LayoutPlan(options: o, dtype: dtype, files: files, layersOfPipelineRank: layersOfRank, warnings: warnings)
    }

    /// Most rank files a plan may have: far above any real NxD layout, low
    /// enough that a plan (built whole, in memory) stays small.
    public static let maximumFileCount = 65_536

    static func checkFileCount(_ o: LayoutOptions) throws(ShardFSError) {
        let (count, overflow) = o.tpSize.multipliedReportingOverflow(by: o.ppSize)
        guard !overflow, count <= maximumFileCount else {
            throw ShardFSError.badLayout(
                flag: "--tp-size", reason: "tp-size \(o.tpSize) x pp-size \(o.ppSize) rank files is more than the \(maximumFileCount) ShardFS plans")
        }
    }

    /// Layers split over S = pp * vpp stages: each gets L / S, the last L % S
    /// one more; stage s runs on pipeline rank s % pp.
    public static func pipelineLayers(layers: Int, options o: LayoutOptions) throws(ShardFSError) -> [[Int]] {
        guard o.ppSize >= 1 else { throw ShardFSError.badLayout(flag: "--pp-size", reason: "must be at least 1") }
        guard o.virtualPPSize >= 1 else { throw ShardFSError.badLayout(flag: "--virtual-pp-size", reason: "must be at least 1") }
        // An overflowing product is more stages than any model has layers.
        let (stages, overflow) = o.ppSize.multipliedReportingOverflow(by: o.virtualPPSize)
        guard !overflow, layers >= stages else {
            throw ShardFSError.badLayout(
                flag: "--pp-size", reason: "num_hidden_layers (\(layers)) is smaller than the \(overflow ? "too many" : String(stages)) pipeline stages (pp-size \(o.ppSize) x virtual-pp-size \(o.virtualPPSize))")
        }
        var result = [[Int]](repeating: [], count: o.ppSize)
        let base = layers / stages, longer = layers % stages
        var layer = 0
        for stage in 0..<stages {
            let count = base + (stage >= stages - longer ? 1 : 0)
            result[stage % o.ppSize].append(contentsOf: layer..<layer + count)
            layer += count
        }
        return result
    }

    static func outputDType(config c: ModelConfig, weights w: LlamaWeights, options o: LayoutOptions) throws(ShardFSError) -> DType {
        if let d = o.dtype ?? c.dtype { return d }
        let dtypes = Set([w.embed.dtype, w.norm.dtype, w.lmHead.dtype] + w.layers.flatMap { [$0.q.dtype, $0.gate.dtype, $0.inputNorm.dtype] })
        guard dtypes.count == 1, let only = dtypes.first else {
            throw ShardFSError.badLayout(flag: "--dtype", reason: "config.json names no torch_dtype and the tensors mix \(dtypes.map(\.rawValue).sorted().joined(separator: ", ")): say which dtype to write")
        }
        return only
    }

    /// The shape of `blocks` stacked on dim 0, with the trailing dims of `source`
    /// (a 1-D source stays 1-D).
    static func stackedShape(_ blocks: [RowBlock], like source: SourceTensor) -> [Int] {
        if source.shape.count <= 1 { return [blocks.reduce(0) { $0 + $1.columns.count }] }
        let rows = blocks.reduce(0) { $0 + $1.rows.count }
        let columns = blocks.first?.columns.count ?? 0
        if columns == RowBlock.matrixShape(source.shape).columns { return [rows] + source.shape.dropFirst() }
        return [rows, columns]
    }
}

/// The cuts of docs/formats/nxd-layout.md for one model and layout, with the layout's
/// validity checked once up front.
struct TensorCutter {
    let config: ModelConfig
    let options: LayoutOptions
    var tp: Int { options.tpSize }

    init(config c: ModelConfig, options o: LayoutOptions) throws(ShardFSError) {
        config = c
        options = o
        guard o.tpSize >= 1 else { throw ShardFSError.badLayout(flag: "--tp-size", reason: "must be at least 1") }
        guard o.kvSizeMultiplier >= 1 else { throw ShardFSError.badLayout(flag: "--kv-size-multiplier", reason: "must be at least 1") }
        if o.fuseQKV && !o.qkvLinear {
            throw ShardFSError.badLayout(flag: "--fuse-qkv", reason: "requires --qkv-linear (NxD's converter silently ignores it without; ShardFS refuses)")
        }
        let T = o.tpSize, m = o.kvSizeMultiplier, Hq = c.heads, Hkv = c.kvHeads
        try TensorCutter.requireDivisible(c.vocab, by: T, what: "vocab_size (embed_tokens and lm_head are cut on dim 0)")
        try TensorCutter.requireDivisible(c.intermediate, by: T, what: "intermediate_size (gate, up and down projections are cut on it)")
        guard o.qkvLinear else {
            try TensorCutter.requireDivisible(Hq * c.headDim, by: T, what: "num_attention_heads*head_dim (q_proj rows and o_proj columns)")
            try TensorCutter.requireDivisible(Hkv * c.headDim, by: T, what: "num_key_value_heads*head_dim (k_proj and v_proj rows)")
            return
        }
        if c.headDim != c.hidden / Hq || c.hidden % Hq != 0 {
            throw ShardFSError.badConfig(
                field: "head_dim", reason: "\(c.headDim) differs from hidden_size / num_attention_heads (\(c.hidden) / \(Hq)); NxD's converter assumes they are equal under --qkv-linear")
        }
        guard Hq % T == 0 else {
            throw ShardFSError.badLayout(flag: "--tp-size", reason: "\(T) does not divide num_attention_heads (\(Hq)), which --qkv-linear requires")
        }
        // Overflow stands for "not tp-size": only the comparison uses it.
        let (product, overflow) = Hkv.multipliedReportingOverflow(by: m)
        let kvProduct = overflow ? -1 : product
        // NxD's converter needs Hkv x m == T; its trainer
        // (`GQAQKVColumnParallelLinear`) also trains with m == 1 and T
        // dividing Hkv, each rank holding whole KV heads and their Q heads.
        guard kvProduct == T || (m == 1 && Hkv % T == 0) else {
            let fits = T % Hkv == 0 ? "use --kv-size-multiplier \(T / Hkv)" : Hkv % T == 0 ? "use --kv-size-multiplier 1" : "no multiplier fits"
            throw ShardFSError.badLayout(
                flag: "--kv-size-multiplier",
                reason: "with --qkv-linear on \(o.backend.rawValue), num_key_value_heads (\(Hkv)) x kv-size-multiplier (\(m)) must equal tp-size (\(T)), or the multiplier be 1 with tp-size dividing num_key_value_heads (other values would cut heads in half); \(fits)")
        }
    }

    static func requireDivisible(_ size: Int, by tp: Int, what: String) throws(ShardFSError) {
        guard size % tp == 0 else {
            throw ShardFSError.badLayout(flag: "--tp-size", reason: "\(tp) does not divide \(what) = \(size)")
        }
    }

    /// `narrow(0, r*k, k)` with k = rows / T.
    func rows(_ t: SourceTensor, _ r: Int) throws(ShardFSError) -> [RowBlock] {
        let (rows, columns) = RowBlock.matrixShape(t.shape)
        try TensorCutter.requireDivisible(rows, by: tp, what: "dim 0 of \(t.name)")
        let k = rows / tp
        return [RowBlock(tensor: t, rows: r * k..<(r + 1) * k, columns: 0..<columns)]
    }

    /// `narrow(1, r*k, k)` with k = columns / T.
    func columns(_ t: SourceTensor, _ r: Int) throws(ShardFSError) -> [RowBlock] {
        let (rows, columns) = RowBlock.matrixShape(t.shape)
        try TensorCutter.requireDivisible(columns, by: tp, what: "dim 1 of \(t.name)")
        let k = columns / tp
        return [RowBlock(tensor: t, rows: 0..<rows, columns: r * k..<(r + 1) * k)]
    }

    /// The first of the n = Hq / T consecutive query heads rank r holds.
    /// trn1 with a KV multiplier above 1 shuffles them so that they belong
    /// to the KV head the rank gets (g = (r % Hkv) * (T / Hkv) + r / Hkv);
    /// with multiplier 1 (Hkv == T, where that g is r, or T dividing Hkv)
    /// and on trn2 they keep the natural order, cut contiguously.
    func firstQueryHead(_ r: Int) -> Int {
        let n = config.heads / tp
        switch options.backend {
        case .trn1 where options.kvSizeMultiplier > 1:
            let Hkv = config.kvHeads
            return ((r % Hkv) * (tp / Hkv) + r / Hkv) * n
        case .trn1, .trn2:
            return r * n
        }
    }

    func queryRows(_ t: SourceTensor, _ r: Int) throws(ShardFSError) -> [RowBlock] {
        let d = config.headDim, first = firstQueryHead(r), n = config.heads / tp
        return [RowBlock(tensor: t, rows: first * d..<(first + n) * d, columns: 0..<config.hidden)]
    }

    func outputColumns(_ t: SourceTensor, _ r: Int) throws(ShardFSError) -> [RowBlock] {
        let d = config.headDim, first = firstQueryHead(r), n = config.heads / tp
        return [RowBlock(tensor: t, rows: 0..<config.hidden, columns: first * d..<(first + n) * d)]
    }

    /// Rank r's rows of K or V after replicating its heads m times: tiled
    /// (K0..K(H-1), K0.., as `repeat`) on trn1, each head m times in a row
    /// (`repeat_interleave`) on trn2. Consecutive source rows are merged into
    /// one block.
    func kvRows(_ t: SourceTensor, _ r: Int) throws(ShardFSError) -> [RowBlock] {
        let d = config.headDim, m = options.kvSizeMultiplier, sourceRows = config.kvHeads * d
        let count = sourceRows * m / tp
        var blocks: [RowBlock] = []
        var x = r * count
        let end = x + count
        while x < end {
            let sourceRow: Int, run: Int
            switch options.backend {
            case .trn1:
                sourceRow = x % sourceRows
                run = min(end - x, sourceRows - sourceRow)
            case .trn2:
                let within = x % d
                sourceRow = (x / d / m) * d + within
                run = min(end - x, d - within)
            }
            if let last = blocks.last, last.rows.upperBound == sourceRow {
                blocks[blocks.count - 1] = RowBlock(tensor: t, rows: last.rows.lowerBound..<sourceRow + run, columns: last.columns)
            } else {
                blocks.append(RowBlock(tensor: t, rows: sourceRow..<sourceRow + run, columns: 0..<config.hidden))
            }
            x += run
        }
        return blocks
    }
}

extension LayoutPlanner {
    /// Plans a layout for an opened checkpoint: checks its tensors against
    /// its config, then cuts. Reads nothing beyond the headers already read.
    public static func plan(checkpoint: Checkpoint, options: LayoutOptions) throws(ShardFSError) -> LayoutPlan {
        let weights = try LlamaWeights(config: checkpoint.config, tensors: checkpoint.tensors)
        if let dpSize = options.dpSize, checkpoint.trainingState == nil || options.format == .hf || options.format == .dcp {
            throw ShardFSError.badLayout(
                flag: "--dp-size", reason: "\(dpSize): the data-parallel size applies to NxD's optimizer files, and \(checkpoint.trainingState == nil ? "the source has none (only an NxD training tag with optim/ has)" : "--format \(options.format.rawValue) writes none")")
        }
        try options.checkApplicable()
        if options.format == .hf {
            return try huggingFacePlan(checkpoint: checkpoint, weights: weights, options: options).typedAsTheSource(checkpoint, requested: options.dtype)
        }
        if options.format == .dcp { return try dcpPlan(checkpoint: checkpoint, weights: weights, options: options) }
        // The plan's one dtype is then kept or not per tensor
        // (`typedAsTheSource`); an NxD tag whose tensors mix dtypes (a bf16
        // run's float32 norms) is named by the dtype most of them have.
        let mostHeld = checkpoint.modelDTypes.flatMap(LayoutPlanner.mostCommon)
        var o = options
        guard let state = checkpoint.trainingState else {
            if o.dtype == nil && checkpoint.config.dtype == nil && Set((checkpoint.modelDTypes ?? [:]).values).count > 1 { o.dtype = mostHeld }
            return try plan(config: checkpoint.config, weights: weights, options: o).typedAsTheSource(checkpoint, requested: options.dtype)
        }
        // A training tag: the weights, then the optimizer files at the
        // requested DP size (by default the tag's own). The weights stay in
        // the dtypes the run trained in (by default), as its save would
        // write them in the new layout.
        o.dpSize = try state.targetDPSize(options.dpSize)
        o.dtype = options.dtype ?? state.modelDType ?? mostHeld
        var result = try plan(config: checkpoint.config, weights: weights, options: o).typedAsTheSource(checkpoint, requested: options.dtype)
        result.optimizer = try optimizerPlan(checkpoint: checkpoint, state: state, plan: result, dpSize: o.dpSize!)
        return result
    }

    /// The dtype most tensors of `dtypes` have (ties: the dtype first by name).
    static func mostCommon(_ dtypes: [String: DType]) -> DType? {
        var count: [DType: Int] = [:]
        for d in dtypes.values { count[d, default: 0] += 1 }
        return count.max { a, b in a.value != b.value ? a.value < b.value : a.key.rawValue > b.key.rawValue }?.key
    }
}
