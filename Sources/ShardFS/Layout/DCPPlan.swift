/// `--format dcp`: the plan of a PyTorch Distributed Checkpoint folder as
/// TorchTitan v0.2.2's CheckpointManager saves a full checkpoint of its
/// Llama3 model trained with AdamW (docs/formats/dcp.md): the model at the
/// top level under TorchTitan's names, in float32; from a training tag also
/// the optimizer (flattened as torch's `get_optimizer_state_dict` names it),
/// `lr_scheduler` and `train_state`. Every tensor is cut along dim 0 into
/// `shards` chunks, chunk r of each in rank r's files, so that each of N
/// data-parallel ranks reads its own rows; nothing is copied here, every
/// chunk is rows of the source (`DCPFiles.swift` makes the bytes).
public struct DCPPlan: Sendable {
    /// Where a tensor's bytes come from.
    public enum TensorSource: Sendable {
        /// Rows of a source tensor; for wq/wk the RoPE-interleaved wide view
        /// (`SourceTensor.ropeInterleaved`), whose row k is rows 2k, 2k+1.
        case rows(SourceTensor, interleaved: Bool)
        /// A 0-dim tensor's element (AdamW's `step`).
        case scalar([UInt8])
    }

    public struct Tensor: Sendable {
        public let dtype: DType
        public let shape: [Int]
        public let source: TensorSource
        /// The chunks along dim 0 (of a 0-dim tensor: one, empty).
        public let chunks: [Range<Int>]
    }

    public enum Value: Sendable {
        case tensor(Tensor)
        /// A Python value, stored as `torch.save` stores it.
        case bytes(PickleValue)
    }

    /// One flattened state-dict entry.
    public struct Item: Sendable {
        public let fqn: String
        /// Its path in the nested state dict (`planner_data`).
        public let path: [String]
        public let value: Value
        /// For display (`plan`): where it comes from, in the source's names.
        public let origin: String
    }

    /// One `.distcp` file: (item, chunk) pairs in file order.
    public struct File: Sendable {
        public let name: String
        public let pieces: [(item: Int, chunk: Int)]
    }

    public let items: [Item]
    public let shards: Int
    public let files: [File]
    /// Per file, where each of its pieces is (`DCPFiles.swift`).
    public let placements: [[Placement]]
    /// `.metadata`, pickled once.
    public let metadataBytes: DCPMetadataBytes
    /// What the user should know to resume from it.
    public let notes: [String]

    init(items: [Item], shards: Int, files: [File], placements: [[Placement]], notes: [String]) {
        self.items = items
        self.shards = shards
        self.files = files
        self.placements = placements
        self.notes = notes
        metadataBytes = DCPMetadataBytes([])
    }

    /// This plan with its `.metadata` pickled.
    func withMetadata() -> DCPPlan {
        DCPPlan(items: items, shards: shards, files: files, placements: placements, notes: notes,
                metadataBytes: DCPMetadataBytes(metadata.pickled(pieceSize: DCPMetadataBytes.pieceSize)))
    }

    private init(items: [Item], shards: Int, files: [File], placements: [[Placement]], notes: [String], metadataBytes: DCPMetadataBytes) {
        self.items = items
        self.shards = shards
        self.files = files
        self.placements = placements
        self.notes = notes
        self.metadataBytes = metadataBytes
    }
}

extension LayoutPlanner {
    /// Default `--dcp-shards`: the data-parallel ranks the chunks are cut for.
    public static let defaultDCPShards = 8
    /// A rank's chunks go in files of about this many bytes (several files
    /// per rank: more to read in parallel, finer `--part` shares).
    static let dcpFileBytes = 4 << 30

    static func dcpPlan(checkpoint: Checkpoint, weights: LlamaWeights, options o: LayoutOptions) throws(ShardFSError) -> LayoutPlan {
        let c = checkpoint.config
        try TorchTitanNames.check(c, flag: "--format dcp", withOptimizer: checkpoint.trainingState != nil)
        let shards = o.dcpShards ?? defaultDCPShards
        guard shards >= 1, shards <= 65_536 else {
            throw ShardFSError.badLayout(flag: "--dcp-shards", reason: "must be between 1 and 65536, not \(shards)")
        }
        let modelDType = o.dtype ?? .float32
        let parameters = TorchTitanNames.parameters(c)
        var notes: [String] = []
        var items: [DCPPlan.Item] = []

        func tensorValue(_ tensor: SourceTensor, dtype: DType, heads: Int?) -> DCPPlan.Value {
            let interleaved = heads.map { tensor.ropeInterleaved(heads: $0) }
            let rows = tensor.shape.first ?? 1
            // wq/wk chunks hold whole row pairs: cut the wide view's rows.
            let unit = interleaved == nil ? 1 : 2
            let chunk = ((rows + shards - 1) / shards + unit - 1) / unit * unit
            var chunks: [Range<Int>] = []
            var start = 0
            while start < rows {
                chunks.append(start..<min(rows, start + chunk))
                start += chunk
            }
            return .tensor(DCPPlan.Tensor(dtype: dtype, shape: tensor.shape, source: .rows(interleaved ?? tensor, interleaved: interleaved != nil),
                                  chunks: chunks))
        }

        let state = checkpoint.trainingState
        let masters = state?.masterWeights
        if let state {
            let optimizer = try TorchTitanOptimizer(state: state)
            notes += optimizer.notes
            items.append(DCPPlan.Item(fqn: "train_state.step", path: ["train_state", "step"], value: .bytes(.int(optimizer.step)), origin: "the optimizer's step"))
            items.append(DCPPlan.Item(fqn: "train_state.ntokens_seen", path: ["train_state", "ntokens_seen"], value: .bytes(.int(0)),
                              origin: "not kept by NxD: 0"))
            for p in parameters {
                let prefix = "state." + p.name + "."
                items.append(DCPPlan.Item(fqn: "optimizer." + prefix + "step", path: ["optimizer", prefix + "step"],
                                  value: .tensor(DCPPlan.Tensor(dtype: .float32, shape: [], source: .scalar(optimizer.stepBytes), chunks: [0..<1])),
                                  origin: "step \(optimizer.step)"))
                for key in ["exp_avg", "exp_avg_sq"] {
                    guard let tensor = state.stateTensors[key]?[p.huggingFaceName] else {
                        throw ShardFSError.badSource(file: "optim/", reason: "holds no \(key) of \(p.huggingFaceName)")
                    }
                    items.append(DCPPlan.Item(fqn: "optimizer." + prefix + key, path: ["optimizer", prefix + key],
                                      value: tensorValue(tensor, dtype: .float32, heads: p.permutedHeads),
                                      origin: "\(key) of \(p.huggingFaceName)\(p.permutedHeads == nil ? "" : ", RoPE-interleaved")"))
                }
            }
            for p in parameters {
                let prefix = "param_groups." + p.name + "."
                for (key, value) in optimizer.groupValues {
                    items.append(DCPPlan.Item(fqn: "optimizer." + prefix + key, path: ["optimizer", prefix + key], value: .bytes(value), origin: "param group"))
                }
            }
            for (key, value) in optimizer.schedulerValues {
                items.append(DCPPlan.Item(fqn: "lr_scheduler." + key, path: ["lr_scheduler", key], value: .bytes(value), origin: optimizer.schedulerOrigin))
            }
        }
        for p in parameters {
            let master = masters?[p.huggingFaceName]
            // Present: LlamaWeights has checked every tensor the config implies
            // (a tied lm_head is the embedding).
            let tensor = master ?? (p.huggingFaceName == "lm_head.weight" ? weights.lmHead : checkpoint.tensors[p.huggingFaceName]!)
            items.append(DCPPlan.Item(fqn: p.name, path: [p.name], value: tensorValue(tensor, dtype: modelDType, heads: p.permutedHeads),
                              origin: "\(master == nil ? "" : "master weight of ")\(p.huggingFaceName)\(p.permutedHeads == nil ? "" : ", RoPE-interleaved")\(tensor.dtype == modelDType ? "" : ", \(tensor.dtype.rawValue) -> \(modelDType.rawValue)")"))
        }

        var plan = LayoutPlan(options: o, dtype: modelDType, files: [], layersOfPipelineRank: [], warnings: [])
        let files = dcpFiles(items, shards: shards)
        plan.dcp = DCPPlan(items: items, shards: shards, files: files,
                           placements: DCPPlan.placements(items: items, files: files).map(\.placements), notes: notes).withMetadata()
        plan.configBytes = checkpoint.configBytes
        return plan
    }

    /// Rank r's files hold chunk r of every tensor, in item order, cut into
    /// files of about `dcpFileBytes`; bytes items and 0-dim tensors go to
    /// rank 0's first file (as DCP puts them with the coordinator's).
    static func dcpFiles(_ items: [DCPPlan.Item], shards: Int) -> [DCPPlan.File] {
        var perRank = [[(item: Int, chunk: Int, bytes: Int)]](repeating: [], count: shards)
        for (index, item) in items.enumerated() {
            switch item.value {
            case .bytes:
                perRank[0].append((index, 0, 0))
            case let .tensor(t):
                let rowBytes = t.shape.dropFirst().reduce(t.dtype.size, *)
                for (chunk, rows) in t.chunks.enumerated() { perRank[chunk].append((index, chunk, rows.count * rowBytes)) }
            }
        }
        var files: [DCPPlan.File] = []
        for (rank, pieces) in perRank.enumerated() where !pieces.isEmpty {
            var current: [(item: Int, chunk: Int)] = [], bytes = 0, number = 0
            for piece in pieces {
                if !current.isEmpty && bytes + piece.bytes > dcpFileBytes {
                    files.append(DCPPlan.File(name: "__\(rank)_\(number).distcp", pieces: current))
                    number += 1
                    current = []
                    bytes = 0
                }
                current.append((piece.item, piece.chunk))
                bytes += piece.bytes
            }
            files.append(DCPPlan.File(name: "__\(rank)_\(number).distcp", pieces: current))
        }
        return files
    }
}
