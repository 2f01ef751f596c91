import Foundation

/// How a source directory is read: what only the user can say of it.
public struct SourceOptions: Sendable {
    /// `--config`: a `config.json`, or a directory holding one. An NxD tag
    /// holds none; a Hugging Face model directory has its own.
    public var config: String?
    /// `--source-hw-backend`: the one thing an NxD tag's files cannot tell.
    public var backend: HardwareBackend?
    /// `--weights-only`: an NxD training tag's weights, without its
    /// optimizer state and the files carried with it.
    public var weightsOnly: Bool
    /// `--optimizer-groups`: how the training script grouped parameters
    /// (nil: inferred from the optimizer files).
    public var optimizerGrouping: OptimizerGrouping?

    public init(config: String? = nil, backend: HardwareBackend? = nil, weightsOnly: Bool = false,
                optimizerGrouping: OptimizerGrouping? = nil) {
        self.config = config
        self.backend = backend
        self.weightsOnly = weightsOnly
        self.optimizerGrouping = optimizerGrouping
    }
}

extension Checkpoint {
    /// Opens `directory` as what it is: a Hugging Face model (config.json and
    /// safetensors), an NxD checkpoint tag (`model/` of rank files), whose
    /// Hugging Face tensors are then assembled from the rank files' pieces,
    /// or a DCP folder (`.metadata`: `DCP/`).
    /// Either way every front end (plan, convert, mount, persist) sees the
    /// same `Checkpoint`.
    public static func open(_ directory: String, options: SourceOptions = SourceOptions()) throws(ShardFSError) -> Checkpoint {
        let isHuggingFace = exists(directory: directory, name: singleFileName) || exists(directory: directory, name: indexName)
        var isDirectory: ObjCBool = false
        let hasModel = FileManager.default.fileExists(atPath: directory + "/model", isDirectory: &isDirectory) && isDirectory.boolValue
        // A DCP folder (TorchTitan's, or --format dcp's): `.metadata` and no `model/`.
        if !hasModel && exists(directory: directory, name: DCPFolder.metadataName) { return try openDCP(folder: directory, options: options) }
        if isHuggingFace || !hasModel {
            if let config = options.config {
                throw ShardFSError.badLayout(flag: "--config", reason: "\(config): \(directory) is a Hugging Face model directory with its own config.json; --config is for NxD checkpoints")
            }
            if let backend = options.backend {
                throw ShardFSError.badLayout(flag: "--source-hw-backend", reason: "\(backend.rawValue): only an NxD checkpoint source has a hardware backend; \(directory) is a Hugging Face model directory")
            }
            return try Checkpoint(directory: directory)
        }
        return try openNxD(tag: directory, options: options)
    }

    /// An NxD tag: config from `--config` (or a `config.json` in the tag),
    /// layout inferred from the rank files.
    static func openNxD(tag: String, options: SourceOptions) throws(ShardFSError) -> Checkpoint {
        ParsedPickles.begin()
        defer { ParsedPickles.end() }
        let configBytes: [UInt8]
        if let given = options.config {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: given, isDirectory: &isDirectory) else {
                throw ShardFSError.badLayout(flag: "--config", reason: "\(given): no such file or directory")
            }
            configBytes = isDirectory.boolValue
                ? try readSmallFile(directory: given, name: "config.json", limit: 16 << 20)
                : try readConfigFile(given)
        } else if exists(directory: tag, name: "config.json") {
            configBytes = try readSmallFile(directory: tag, name: "config.json", limit: 16 << 20)
        } else {
            throw ShardFSError.badLayout(
                flag: "--config", reason: "missing: \(tag) is an NxD checkpoint, which holds no config.json; pass the model's config.json (or its Hugging Face directory) with --config")
        }
        let config = try ModelConfig(json: configBytes)
        let rankFiles = try NxDRankFiles(tag: tag, config: config)
        var isDirectory: ObjCBool = false
        let hasOptimizer = FileManager.default.fileExists(atPath: tag + "/optim", isDirectory: &isDirectory) && isDirectory.boolValue
        // The optimizer is read for its state, and for the model itself when
        // the model files hold no data (the master weights are the model).
        var optimizer: ZeroOptimizerTag?
        if hasOptimizer && (!options.weightsOnly || rankFiles.dataOmitted) {
            optimizer = try ZeroOptimizerTag(tag: tag, model: rankFiles, base: rankFiles.files.count, grouping: options.optimizerGrouping)
        }
        if rankFiles.dataOmitted && optimizer?.hasMasterWeights != true {
            throw ShardFSError.badSource(
                file: "model/", reason: "its xser rank files hold no tensor data (saved with avoid_saving_lower_precision_weights), and \(hasOptimizer ? "optim/ holds no sharded_master_weights" : "the tag has no optim/"), where the trainer keeps the weights then")
        }
        let modelRanks = rankFiles.dataOmitted ? optimizer!.ranks(of: nil, model: rankFiles) : rankFiles.ranks
        let inverse = try InverseLayout(config: config, ranks: modelRanks, tpSize: rankFiles.tpSize, ppSize: rankFiles.ppSize,
                                        backend: options.backend)
        var state: TrainingState?
        if let optimizer, !options.weightsOnly {
            state = try trainingState(tag: tag, optimizer: optimizer, model: rankFiles, inverse: inverse, config: config)
        }
        return Checkpoint(directory: tag, config: config, configBytes: configBytes, files: rankFiles.files + (optimizer?.files ?? []),
                          tensors: inverse.tensors, sourceLayout: inverse.options,
                          fingerprints: rankFiles.fingerprints + (optimizer?.fingerprints ?? []), trainingState: state,
                          modelDTypes: try InverseLayout.heldDTypes(plan: inverse.plan, ranks: rankFiles.ranks))
    }

    /// The optimizer's state tensors under Hugging Face names (each state
    /// key inverted by the same plan as the weights), and the carried files.
    static func trainingState(tag: String, optimizer: ZeroOptimizerTag, model: NxDRankFiles, inverse: InverseLayout,
                              config: ModelConfig) throws(ShardFSError) -> TrainingState {
        // A tied lm_head is the embedding's replica to the inverse layout
        // (its first copy stays); an optimizer holding lm_head's state apart
        // would lose it.
        if config.tieWordEmbeddings, let rank = model.ranks.first(where: { $0.keys.contains { $0.key == "lm_head.weight" } }) {
            throw ShardFSError.badConfig(
                field: "tie_word_embeddings", reason: "true, but the optimizer holds lm_head.weight's state apart from model.embed_tokens.weight's (\(rank.path)): ShardFS would keep only one of them; give the config the run trained with (--config)")
        }
        var stateTensors: [String: [String: SourceTensor]] = [:]
        for entry in optimizer.stateEntries where entry.constant == nil {
            stateTensors[entry.key] = try InverseLayout.tiles(plan: inverse.plan, ranks: optimizer.ranks(of: entry.key, model: model), config: config)
        }
        var master: [String: SourceTensor]?
        if optimizer.hasMasterWeights {
            master = model.dataOmitted ? inverse.tensors
                : try InverseLayout.tiles(plan: inverse.plan, ranks: optimizer.ranks(of: nil, model: model), config: config)
        }
        let (carried, notes) = try CarriedFiles.read(tag: tag)
        let first = optimizer.optimizerFiles[0]
        let modelDTypes = Set(model.ranks.flatMap { $0.keys.map(\.dtype) })
        return TrainingState(dpSize: optimizer.dpSize, modelDType: modelDTypes.count == 1 ? modelDTypes.first : nil, xser: optimizer.xser, grouping: optimizer.grouping, keys: first.keys,
                             groups: first.groups.map(\.settings), stateEntries: optimizer.stateEntries, stateTensors: stateTensors,
                             masterWeights: master, carried: carried, notes: notes,
                             sourceIndexes: model.ranks.map { rank in
                                 (rank.tp, rank.pp, optimizer.grouping.groups(rank.keys.map(\.key)).flatMap { $0 })
                             })
    }

    static func readConfigFile(_ path: String) throws(ShardFSError) -> [UInt8] {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let file = try SourceFile(directory: directory.isEmpty ? "/" : directory, name: name)
        guard file.size <= 16 << 20 else { throw ShardFSError.badSource(file: path, reason: "larger than \(16 << 20) bytes") }
        return try file.readBytes(at: 0, count: file.size)
    }
}
