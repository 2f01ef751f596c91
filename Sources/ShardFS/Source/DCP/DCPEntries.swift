/// A DCP folder's entries sorted by what they are in a TorchTitan Llama3
/// checkpoint (docs/formats/dcp.md, "What TorchTitan v0.2.2 saves"): the
/// model's parameters, each parameter's optimizer state and param-group
/// values, the LR scheduler's and the train state's values, and the data
/// loader's (skipped). Anything else is refused by name: ShardFS would not
/// know where it goes in NxD's files.
struct DCPEntries {
    /// One parameter of TorchTitan's Llama3 with the entries that concern it.
    struct Parameter {
        let names: TorchTitanNames.Parameter
        /// The model's own entry (nil until found: every one must be).
        var model: DCPMetadata.TensorEntry?
        /// `optimizer.state.<fqn>.<key>`, in metadata order.
        var state: [(key: String, fqn: String, entry: DCPMetadata.Entry)] = []
        /// `optimizer.param_groups.<fqn>.<key>`, in metadata order.
        var groupValues: [(key: String, fqn: String, entry: DCPMetadata.Entry)] = []
    }

    /// In TorchTitan's `named_parameters()` order.
    var parameters: [Parameter]
    /// `lr_scheduler.<key>` and `train_state.<key>`: fqn by key.
    var scheduler: [String: (fqn: String, entry: DCPMetadata.Entry)] = [:]
    var trainState: [String: (fqn: String, entry: DCPMetadata.Entry)] = [:]
    /// `dataloader` and `dataloader.*`.
    var dataloader: [String] = []

    /// Whether the folder holds an optimizer (its state or param groups).
    var hasOptimizer: Bool { parameters.contains { !$0.state.isEmpty || !$0.groupValues.isEmpty } }

    init(metadata: DCPMetadata, config c: ModelConfig) throws(ShardFSError) {
        parameters = TorchTitanNames.parameters(c).map { Parameter(names: $0) }
        var position: [String: Int] = [:]
        for (i, p) in parameters.enumerated() { position[p.names.name] = i }

        /// The parameter and key of `<prefix><fqn>.<key>`, or a refusal naming `name`.
        func split(_ name: String, prefix: String) throws(ShardFSError) -> (Int, String) {
            let rest = name.dropFirst(prefix.count)
            let parameter = rest.lastIndex(of: ".").map { String(rest[..<$0]) } ?? String(rest)
            guard let dot = rest.lastIndex(of: "."), let p = position[parameter] else {
                let why = DCPEntries.beyondLayers(parameter, config: c) ?? "which is no parameter of TorchTitan's Llama3"
                throw ShardFSError.badSource(file: DCPFolder.metadataName, reason: "\(name): the optimizer's entry of \(parameter), \(why)")
            }
            return (p, String(rest[rest.index(after: dot)...]))
        }

        for (fqn, entry) in metadata.entries {
            if let p = position[fqn] {
                guard case .tensor(let t) = entry else {
                    throw ShardFSError.badSource(file: DCPFolder.metadataName, reason: "\(fqn) is a bytes item, not the model's tensor")
                }
                parameters[p].model = t
            } else if fqn.hasPrefix("optimizer.state.") {
                let (p, key) = try split(fqn, prefix: "optimizer.state.")
                parameters[p].state.append((key, fqn, entry))
            } else if fqn.hasPrefix("optimizer.param_groups.") {
                let (p, key) = try split(fqn, prefix: "optimizer.param_groups.")
                parameters[p].groupValues.append((key, fqn, entry))
            } else if fqn.hasPrefix("lr_scheduler.") {
                scheduler[String(fqn.dropFirst("lr_scheduler.".count))] = (fqn, entry)
            } else if fqn.hasPrefix("train_state.") {
                trainState[String(fqn.dropFirst("train_state.".count))] = (fqn, entry)
            } else if fqn == "dataloader" || fqn.hasPrefix("dataloader.") {
                dataloader.append(fqn)
            } else {
                throw ShardFSError.badSource(file: DCPFolder.metadataName, reason: DCPEntries.unknown(fqn, config: c))
            }
        }
        for p in parameters where p.model == nil {
            throw ShardFSError.badTensor(
                name: p.names.huggingFaceName, reason: "missing from the DCP checkpoint: it holds no \(p.names.name) (TorchTitan's name for it), which config.json implies")
        }
    }

    /// Why `fqn` is refused.
    static func unknown(_ fqn: String, config c: ModelConfig) -> String {
        if let why = beyondLayers(fqn, config: c) { return "\(fqn) is \(why)" }
        if fqn.hasPrefix("model.") || fqn.hasPrefix("lm_head.") {
            return "\(fqn) is a Hugging Face name: ShardFS reads a DCP checkpoint under TorchTitan's Llama3 names (tok_embeddings.weight, layers.N.attention.wq.weight, ...)"
        }
        return "\(fqn) is neither a parameter of TorchTitan's Llama3 nor an entry of its checkpoint (optimizer.*, lr_scheduler.*, train_state.*, dataloader.*): ShardFS does not know where it goes"
    }

    /// Why a `layers.N.` name of a layer the config does not have is
    /// refused ("a parameter of layer N, but ..."); nil for another name.
    static func beyondLayers(_ name: String, config c: ModelConfig) -> String? {
        guard name.hasPrefix("layers."), let n = Int(name.dropFirst("layers.".count).prefix { $0 != "." }), n >= c.layers else { return nil }
        return "a parameter of layer \(n), but config.json says num_hidden_layers = \(c.layers) (is --config the model's own?)"
    }
}
