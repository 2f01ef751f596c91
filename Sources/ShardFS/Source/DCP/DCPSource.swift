import Foundation

/// A PyTorch Distributed Checkpoint folder as a source (TorchTitan's, or
/// ShardFS's own `--format dcp`; docs/formats/dcp.md): its Llama3
/// parameters under Hugging Face names, each tensor in tiles of the
/// chunks the `.distcp` files hold (wq and wk back in Hugging Face's row
/// order, through strided tiles), and, unless `--weights-only`, its AdamW
/// state as the `TrainingState` NxD's ZeRO-1 optimizer would keep. Reads
/// `.metadata` and each item's archive headers, never tensor data (but the
/// one element of each optimizer `step`).
extension Checkpoint {
    static func openDCP(folder: String, options: SourceOptions) throws(ShardFSError) -> Checkpoint {
        ParsedPickles.begin()
        defer { ParsedPickles.end() }
        if let backend = options.backend {
            throw ShardFSError.badLayout(flag: "--source-hw-backend", reason: "\(backend.rawValue): only an NxD checkpoint source has a hardware backend; \(folder) is a DCP checkpoint")
        }
        let configBytes = try dcpConfig(options.config, folder: folder)
        let config = try ModelConfig(json: configBytes)
        // A TorchTitan checkpoint has an output layer of its own: no tied config fits it.
        try TorchTitanNames.check(config, flag: "--config", withOptimizer: true)
        let expected = Dictionary(uniqueKeysWithValues: try LlamaWeights.expectedTensors(config).map { ($0.name, $0) })
        let dcp = try DCPFolder(directory: folder)
        let entries = try DCPEntries(metadata: dcp.metadata, config: config)
        let withOptimizer = !options.weightsOnly && entries.hasOptimizer

        // The model: each tensor's size and dtype against the config.
        var requests = DCPRequests(folder: dcp)
        var ranges: [Range<Int>] = []
        for p in entries.parameters {
            let t = p.model!, name = p.names.name, e = expected[p.names.huggingFaceName]!
            guard t.size == e.shape else {
                throw ShardFSError.badTensor(name: name, reason: "has the size \(t.size) in the DCP checkpoint, but config.json implies \(e.shape) (\(e.meaning)) for it (\(p.names.huggingFaceName))")
            }
            if withOptimizer && t.dtype != .float32 {
                throw ShardFSError.badTensor(name: name, reason: "is \(t.dtype) in the DCP checkpoint: a training state resumes from float32 parameters (NxD's master weights are float32); --weights-only converts the weights alone")
            }
            guard t.dtype == .float32 || t.dtype == config.dtype else {
                throw ShardFSError.badTensor(name: name, reason: "is \(t.dtype) in the DCP checkpoint, neither float32 (TorchTitan's parameters) nor config.json's torch_dtype (\(config.dtype?.rawValue ?? "none given")): is --config the model's own?")
            }
            ranges.append(try requests.tensor(name, t))
        }
        let optimizer = withOptimizer ? try DCPOptimizer(entries: entries, requests: &requests) : nil

        let found = try DCPItems.read(requests.requests, folder: dcp)
        var tensors: [String: SourceTensor] = [:]
        for (p, range) in zip(entries.parameters, ranges) {
            tensors[p.names.huggingFaceName] = DCPRequests.assemble(found, range, t: p.model!, name: p.names.huggingFaceName,
                                                                    permutedHeads: p.names.permutedHeads)
        }
        let dtypes = Set(tensors.values.map(\.dtype))
        let state = try optimizer?.trainingState(found: found, requests: requests, entries: entries, model: tensors, modelDType: dtypes.count == 1 ? dtypes.first : nil,
                                                 grouping: options.optimizerGrouping ?? .examples)
        return Checkpoint(directory: folder, config: config, configBytes: configBytes, files: dcp.files, tensors: tensors,
                          sourceLayout: nil, fingerprints: nil, trainingState: state)
    }

    /// `--config` (a config.json, or a directory holding one): required, as a
    /// DCP folder holds no config.json.
    static func dcpConfig(_ given: String?, folder: String) throws(ShardFSError) -> [UInt8] {
        guard let given else {
            throw ShardFSError.badLayout(
                flag: "--config", reason: "missing: \(folder) is a DCP checkpoint, which holds no config.json; pass the model's config.json (or its Hugging Face directory) with --config")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: given, isDirectory: &isDirectory) else {
            throw ShardFSError.badLayout(flag: "--config", reason: "\(given): no such file or directory")
        }
        return isDirectory.boolValue ? try readSmallFile(directory: given, name: "config.json", limit: 16 << 20) : try readConfigFile(given)
    }
}
