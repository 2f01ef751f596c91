/// A data-parallel shard of one state tensor of one parameter: rows
/// `ceil(d0 / dp) * d ..< ceil(d0 / dp) * (d + 1)` of the parameter's
/// TP-local state (its rank-file piece's blocks, over the state's tensors),
/// the rows past d0 zeros (ZeRO-1 pads dim 0 to a multiple of the DP size).
public struct PlannedShard: Equatable, Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let blocks: [RowBlock]
    public let paddingElements: Int

    public var elementCount: Int { shape.reduce(1, *) }
}

/// One parameter of one optimizer file, as NxD's ZeRO-1 optimizer numbers it.
public struct PlannedParameter: Equatable, Sendable {
    /// The rank file's key, for display.
    public let key: String
    /// `shape_info`: the TP-local shape.
    public let shape: [Int]
    /// One per `TrainingState.stateEntries` entry: a shard, or nil where the
    /// entry is a carried constant.
    public let state: [PlannedShard?]
    public let master: PlannedShard?
}

/// `optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt`.
public struct OptimizerFile: Equatable, Sendable {
    public let dpRank: Int
    public let tpRank: Int
    public let ppRank: Int
    /// By index; groups take them in order, `groupSizes` at a time.
    public let parameters: [PlannedParameter]
    public let groupSizes: [Int]

    public var path: String { "optim/" + OptimizerFile.fileName(dp: dpRank, tp: tpRank, pp: ppRank) }

    public static func fileName(dp: Int, tp: Int, pp: Int) -> String {
        NxDFileName.rankFile(dp: dp, tp: tp, pp: pp)
    }
}

/// The optimizer files of a layout: for every (dp, tp, pp), the state NxD's
/// ZeRO-1 optimizer would hold, and `save_checkpoint` write, had the run
/// been in this layout from the start (docs/formats/zero1.md).
public struct OptimizerPlan: Sendable {
    public let dpSize: Int
    public let state: TrainingState
    /// tp-major, then pp, then dp: each rank file's optimizer files together.
    public let files: [OptimizerFile]
}

extension LayoutPlanner {
    /// Most optimizer files a plan may have (like `maximumFileCount`).
    public static let maximumOptimizerFileCount = 1 << 20

    /// The optimizer files of `plan` (a pt or xser plan of `checkpoint`) at
    /// data-parallel size `dpSize`. Each state tensor is cut by the very
    /// plan of the weights, replanned over the state's tensors: the same
    /// partition rule for every parameter, fused QKV and gate_up included.
    static func optimizerPlan(checkpoint: Checkpoint, state: TrainingState, plan: LayoutPlan,
                              dpSize: Int) throws(ShardFSError) -> OptimizerPlan {
        guard dpSize >= 1 else { throw ShardFSError.badLayout(flag: "--dp-size", reason: "must be at least 1") }
        let (count, overflow) = plan.files.count.multipliedReportingOverflow(by: dpSize)
        guard !overflow, count <= maximumOptimizerFileCount else {
            throw ShardFSError.badLayout(
                flag: "--dp-size", reason: "\(dpSize) data-parallel ranks x \(plan.files.count) rank files is more than the \(maximumOptimizerFileCount) optimizer files ShardFS plans")
        }
        let c = checkpoint.config
        func replan(_ tensors: [String: SourceTensor], what: String) throws(ShardFSError) -> LayoutPlan {
            var o = plan.options
            let dtypes = Set(tensors.values.map(\.dtype))
            guard dtypes.count == 1, let dtype = dtypes.first else {
                throw ShardFSError.badSource(file: "optim/", reason: "its \(what) tensors mix \(dtypes.map(\.rawValue).sorted().joined(separator: ", "))")
            }
            o.dtype = dtype
            o.format = .pt
            return try LayoutPlanner.plan(config: c, weights: try LlamaWeights(config: c, tensors: tensors), options: o)
        }
        let statePlans = try state.stateEntries.map { (entry) throws(ShardFSError) -> LayoutPlan? in
            guard entry.constant == nil, let tensors = state.stateTensors[entry.key] else { return nil }
            return try replan(tensors, what: entry.key)
        }
        let masterPlan = try state.masterWeights.map { (tensors) throws(ShardFSError) in try replan(tensors, what: "master weight") }

        var files: [OptimizerFile] = []
        files.reserveCapacity(count)
        for (fileIndex, rankFile) in plan.files.enumerated() {
            let keys: [String]
            switch LlamaParameterOrder.sorted(rankFile.tensors.map(\.key)) {
            case .success(let sorted): keys = sorted
            case .failure(let unknown): throw ShardFSError.badTensor(name: unknown.key, reason: "not a parameter of NxD's Llama: ShardFS cannot number it for the optimizer")
            }
            let groups = state.grouping.groups(keys)
            let ordered = groups.flatMap { $0 }
            func tensors(_ plan: LayoutPlan?) -> [String: PlannedTensor] {
                guard let plan else { return [:] }
                return Dictionary(uniqueKeysWithValues: plan.files[fileIndex].tensors.map { ($0.key, $0) })
            }
            let stateTensors = statePlans.map(tensors)
            let masterTensors = tensors(masterPlan)
            let shapes = Dictionary(uniqueKeysWithValues: rankFile.tensors.map { ($0.key, $0.shape) })
            for dp in 0..<dpSize {
                let parameters = ordered.map { key in
                    PlannedParameter(
                        key: key, shape: shapes[key]!,
                        state: stateTensors.map { $0[key].map { shard(of: $0, dp: dp, dpSize: dpSize) } },
                        master: masterTensors[key].map { shard(of: $0, dp: dp, dpSize: dpSize) })
                }
                files.append(OptimizerFile(dpRank: dp, tpRank: rankFile.tpRank, ppRank: rankFile.ppRank,
                                           parameters: parameters, groupSizes: groups.map(\.count)))
            }
        }
        return OptimizerPlan(dpSize: dpSize, state: state, files: files)
    }

    /// DP rank `dp`'s shard of a TP-local tensor.
    static func shard(of tensor: PlannedTensor, dp: Int, dpSize: Int) -> PlannedShard {
        let rows = tensor.shape[0]
        let chunk = (rows + dpSize - 1) / dpSize
        let first = min(rows, dp * chunk), last = min(rows, (dp + 1) * chunk)
        let rowElements = tensor.shape.dropFirst().reduce(1, *)
        return PlannedShard(dtype: tensor.dtype, shape: [chunk] + tensor.shape.dropFirst(),
                            blocks: RowBlock.stacked(tensor.blocks, along: first..<last, oneDimensional: tensor.shape.count == 1),
                            paddingElements: (chunk - (last - first)) * rowElements)
    }
}

extension RowBlock {
    /// The part of `blocks`, stacked along dim 0 (rows of matrices; the
    /// columns of a 1-D tensor's blocks, one row each), that covers
    /// positions `range` of the stack.
    static func stacked(_ blocks: [RowBlock], along range: Range<Int>, oneDimensional: Bool) -> [RowBlock] {
        var result: [RowBlock] = []
        var position = 0
        for block in blocks {
            let span = oneDimensional ? block.columns : block.rows
            defer { position += span.count }
            let low = max(range.lowerBound, position), high = min(range.upperBound, position + span.count)
            guard low < high else { continue }
            let cut = span.lowerBound + (low - position)..<span.lowerBound + (high - position)
            result.append(oneDimensional ? RowBlock(tensor: block.tensor, rows: block.rows, columns: cut)
                                         : RowBlock(tensor: block.tensor, rows: cut, columns: block.columns))
        }
        return result
    }
}
