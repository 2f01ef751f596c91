/// The tensors of a Llama (or Mistral) checkpoint, named and shape-checked
/// against its config (docs/formats/nxd-layout.md, "Inputs"). Anything the layout does not
/// know (a bias, an unknown name) is refused here, by name, so the planner
/// only ever sees a complete, consistent model.
public struct LlamaWeights: Sendable {
    public struct Layer: Sendable {
        public let q, k, v, o: SourceTensor
        public let gate, up, down: SourceTensor
        public let inputNorm, postAttentionNorm: SourceTensor
    }

    public let embed: SourceTensor
    public let layers: [Layer]
    public let norm: SourceTensor
    /// For tied embeddings this is the embedding itself: the converter's input
    /// (a `state_dict()`) carries `lm_head.weight` equal to `embed_tokens`.
    public let lmHead: SourceTensor

    /// A tensor the config implies: its name, shape, and what that shape means.
    public struct Expected: Sendable {
        public let name: String
        public let shape: [Int]
        public let meaning: String
    }

    /// Rows of q_proj and of k_proj/v_proj. The config's sizes are checked
    /// only one by one; their products must not trap on a config.json that
    /// makes them overflow.
    static func projectionRows(_ c: ModelConfig) throws(ShardFSError) -> (query: Int, keyValue: Int) {
        func rows(_ heads: Int, _ field: String) throws(ShardFSError) -> Int {
            let (product, overflow) = heads.multipliedReportingOverflow(by: c.headDim)
            guard !overflow else { throw ShardFSError.badConfig(field: field, reason: "\(heads) heads x head_dim \(c.headDim) overflows") }
            return product
        }
        return (try rows(c.heads, "num_attention_heads"), try rows(c.kvHeads, "num_key_value_heads"))
    }

    /// Every tensor `config` implies, in the model's state-dict order:
    /// embed_tokens; per layer q, k, v, o, gate, up, down, input_layernorm,
    /// post_attention_layernorm; norm; lm_head unless tied to the embedding.
    /// Callers check `num_hidden_layers` against the files first
    /// (`checkLayerCount`): the list has that many layers.
    public static func expectedTensors(_ c: ModelConfig) throws(ShardFSError) -> [Expected] {
        let h = c.hidden
        let (qRows, kvRows) = try projectionRows(c)
        var expected = [Expected(name: "model.embed_tokens.weight", shape: [c.vocab, h], meaning: "[vocab_size, hidden_size]")]
        for n in 0..<c.layers {
            let p = "model.layers.\(n)."
            expected += [
                Expected(name: p + "self_attn.q_proj.weight", shape: [qRows, h], meaning: "[num_attention_heads*head_dim, hidden_size]"),
                Expected(name: p + "self_attn.k_proj.weight", shape: [kvRows, h], meaning: "[num_key_value_heads*head_dim, hidden_size]"),
                Expected(name: p + "self_attn.v_proj.weight", shape: [kvRows, h], meaning: "[num_key_value_heads*head_dim, hidden_size]"),
                Expected(name: p + "self_attn.o_proj.weight", shape: [h, qRows], meaning: "[hidden_size, num_attention_heads*head_dim]"),
                Expected(name: p + "mlp.gate_proj.weight", shape: [c.intermediate, h], meaning: "[intermediate_size, hidden_size]"),
                Expected(name: p + "mlp.up_proj.weight", shape: [c.intermediate, h], meaning: "[intermediate_size, hidden_size]"),
                Expected(name: p + "mlp.down_proj.weight", shape: [h, c.intermediate], meaning: "[hidden_size, intermediate_size]"),
                Expected(name: p + "input_layernorm.weight", shape: [h], meaning: "[hidden_size]"),
                Expected(name: p + "post_attention_layernorm.weight", shape: [h], meaning: "[hidden_size]"),
            ]
        }
        expected.append(Expected(name: "model.norm.weight", shape: [h], meaning: "[hidden_size]"))
        if !c.tieWordEmbeddings {
            expected.append(Expected(name: "lm_head.weight", shape: [c.vocab, h], meaning: "[vocab_size, hidden_size]; tie_word_embeddings is false"))
        }
        return expected
    }

    /// The number of layers `names` hold tensors of: one past the highest
    /// N of a `model.layers.N.` name.
    public static func layersPresent<Names: Sequence<String>>(_ names: Names) -> Int {
        var highest = -1
        for name in names {
            if let n = layerNumber(name), n > highest { highest = n }
        }
        return highest + 1
    }

    /// N of a `model.layers.N.` name (at most 9 digits: any more is no layer
    /// of a real model, and is refused as an unknown tensor).
    public static func layerNumber(_ name: String) -> Int? {
        let prefix = "model.layers."
        guard name.hasPrefix(prefix) else { return nil }
        let digits = name.utf8.dropFirst(prefix.utf8.count).prefix { $0 >= 0x30 && $0 <= 0x39 }
        guard !digits.isEmpty, digits.count <= 9 else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    }

    /// Refuses a `num_hidden_layers` beyond the layers `present` in the files,
    /// before anything is built for that many layers: a config claiming 10^12
    /// layers once grew `plan` to 14.6 GB before any tensor was compared.
    /// `holds` says whose tensors: "the checkpoint holds".
    static func checkLayerCount(_ c: ModelConfig, present: Int, holds: String) throws(ShardFSError) {
        guard c.layers > present else { return }
        throw ShardFSError.badConfig(
            field: "num_hidden_layers",
            reason: present == 0 ? "\(c.layers), but \(holds) no model.layers.* tensors"
                : "\(c.layers), but \(holds) tensors of layers 0 to \(present - 1) only (is config.json the model's own?)")
    }

    public init(config c: ModelConfig, tensors: [String: SourceTensor]) throws(ShardFSError) {
        _ = try LlamaWeights.projectionRows(c)
        try LlamaWeights.checkLayerCount(c, present: LlamaWeights.layersPresent(tensors.keys), holds: "the checkpoint holds")
        var used = Set<String>()
        var found: [String: SourceTensor] = [:]
        for e in try LlamaWeights.expectedTensors(c) {
            guard let tensor = tensors[e.name] else {
                throw ShardFSError.badTensor(name: e.name, reason: "missing from the checkpoint (config.json implies it: \(e.meaning))")
            }
            guard tensor.shape == e.shape else {
                throw ShardFSError.badTensor(name: e.name, reason: "has shape \(tensor.shape) but config.json implies \(e.shape) (\(e.meaning))")
            }
            used.insert(e.name)
            found[e.name] = tensor
        }
        func tensor(_ name: String) -> SourceTensor { found[name]! }
        embed = tensor("model.embed_tokens.weight")
        layers = (0..<c.layers).map { n in
            let p = "model.layers.\(n)."
            return Layer(q: tensor(p + "self_attn.q_proj.weight"), k: tensor(p + "self_attn.k_proj.weight"),
                         v: tensor(p + "self_attn.v_proj.weight"), o: tensor(p + "self_attn.o_proj.weight"),
                         gate: tensor(p + "mlp.gate_proj.weight"), up: tensor(p + "mlp.up_proj.weight"),
                         down: tensor(p + "mlp.down_proj.weight"), inputNorm: tensor(p + "input_layernorm.weight"),
                         postAttentionNorm: tensor(p + "post_attention_layernorm.weight"))
        }
        norm = tensor("model.norm.weight")
        if c.tieWordEmbeddings {
            // A tied checkpoint normally omits lm_head; if it ships one anyway,
            // the model ignores it and so do we.
            if tensors["lm_head.weight"] != nil { used.insert("lm_head.weight") }
            lmHead = embed
        } else {
            lmHead = tensor("lm_head.weight")
        }
        let unknown = tensors.keys.filter { !used.contains($0) }.sorted()
        if let bias = unknown.first(where: { $0.hasSuffix(".bias") }) {
            throw ShardFSError.badTensor(name: bias, reason: "bias tensors are not supported: NxD's Llama layers have no bias")
        }
        if let name = unknown.first {
            let reason = name.hasPrefix("model.layers.")
                ? "is not part of a \(c.architecture) with num_hidden_layers = \(c.layers)"
                : "is not a \(c.architecture) weight ShardFS knows how to place"
            throw ShardFSError.badTensor(name: name, reason: reason)
        }
    }
}
