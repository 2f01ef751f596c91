import ShardFS

/// What `plan` shows of a training tag's ZeRO-1 optimizer state: the layout
/// inferred from the source's files (which parameter each index stands
/// for), and the optimizer files of the planned layout.
struct OptimizerReport: Encodable {
    struct Numbering: Encodable {
        let tpRank: Int
        let ppRank: Int
        /// `parameters[i]`: the parameter index i stands for.
        let parameters: [String]
    }
    struct Parameter: Encodable {
        let index: Int
        let key: String
        /// `shape_info`: the TP-local shape.
        let shape: [Int]
        /// Rows of dim 0 in each data-parallel rank's shard, the last padded.
        let shardRows: Int
        let paddingRows: Int
    }
    struct File: Encodable {
        let tpRank: Int
        let ppRank: Int
        /// One per data-parallel rank, in dp order (xser: the reference file).
        let paths: [String]
        let sizes: [Int]
        let groupSizes: [Int]
        let parameters: [Parameter]
    }

    let sourceDPSize: Int
    let dpSize: Int
    let grouping: String
    /// A parameter's state, in order: "exp_avg" (resharded), "step = 7" (carried).
    let state: [String]
    let masterWeights: Bool
    let carried: [String]
    let replicated: String
    let source: [Numbering]
    let files: [File]

    init(_ plan: OptimizerPlan, sizeOf: (String) -> Int?) {
        let state = plan.state
        sourceDPSize = state.dpSize
        dpSize = plan.dpSize
        grouping = state.grouping.description
        self.state = state.stateEntries.map { entry in
            switch entry.constant {
            case nil: return entry.key
            case .plain(let value)?: return "\(entry.key) = \(OptimizerReport.describe(value))"
            case .scalarTensor(let dtype, let bytes)?: return "\(entry.key) = \(OptimizerReport.describe(dtype, bytes)) (0-d \(dtype.rawValue) tensor)"
            }
        }
        masterWeights = state.masterWeights != nil
        carried = state.carried.map(\.path)
        replicated = "replicated parameters (norms on every TP rank; K/V heads under a KV multiplier) take the state of their first copy (TP rank 0's), as NxD's converter takes the weights"
        source = state.sourceIndexes.map { Numbering(tpRank: $0.tp, ppRank: $0.pp, parameters: $0.keys) }
        var files: [File] = []
        for file in plan.files where file.dpRank == 0 {
            let all = plan.files.filter { $0.tpRank == file.tpRank && $0.ppRank == file.ppRank }
            let parameters = file.parameters.enumerated().map { index, p in
                let rows = p.shape[0], shard = (rows + plan.dpSize - 1) / plan.dpSize
                return Parameter(index: index, key: p.key, shape: p.shape, shardRows: shard, paddingRows: shard * plan.dpSize - rows)
            }
            files.append(File(tpRank: file.tpRank, ppRank: file.ppRank, paths: all.map(\.path), sizes: all.map { sizeOf($0.path) ?? 0 },
                              groupSizes: file.groupSizes, parameters: parameters))
        }
        self.files = files
    }

    static func describe(_ value: PickleValue) -> String {
        switch value {
        case .int(let i): return String(i)
        case .float(let f): return String(f)
        default: return value.kindName
        }
    }

    static func describe(_ dtype: DType, _ bytes: [UInt8]) -> String {
        guard dtype == .float32, bytes.count == 4 else { return "a \(dtype.rawValue) value" }
        let bits = bytes.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
        return String(Float(bitPattern: bits))
    }

    var lines: [String] {
        var lines = [
            "optimizer: ZeRO-1 state, dp \(sourceDPSize) -> dp \(dpSize); \(grouping)",
            "  per parameter: \(state.joined(separator: ", "))\(masterWeights ? "; fp32 master weights" : "")",
            "  \(replicated)",
            "  carried as they are: \(carried.isEmpty ? "nothing" : carried.joined(separator: ", "))\(carried.contains("done") ? " (done last)" : "")",
            "  the source's indexes, as inferred:",
        ]
        for numbering in source {
            lines.append("    tp \(numbering.tpRank) pp \(numbering.ppRank): "
                + numbering.parameters.enumerated().map { "\($0.offset) \($0.element)" }.joined(separator: ", "))
        }
        for file in files {
            lines.append("")
            for (path, size) in zip(file.paths, file.sizes) { lines.append("\(path)  \(size) bytes (\(Units.bytes(size)))") }
            lines.append("  param groups of \(file.groupSizes.map(String.init).joined(separator: " and ")) parameters")
            for p in file.parameters {
                let padding = p.paddingRows > 0 ? ", \(p.paddingRows) zero rows of padding at the end" : ""
                lines.append("  \(p.index) \(p.key) [\(p.shape.map(String.init).joined(separator: ", "))]: \(dpSize) shards of \(p.shardRows) rows\(padding)")
            }
        }
        return lines
    }
}
