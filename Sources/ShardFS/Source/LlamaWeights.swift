/// The tensors of a Llama (or Mistral) checkpoint, named and shape-checked
/// against its config (nxd-layout.md, "Inputs"). Anything the layout does not
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

    public init(config c: ModelConfig, tensors: [String: SourceTensor]) throws(ShardFSError) {
        var used = Set<String>()
        func take(_ name: String, _ shape: [Int], _ meaning: String) throws(ShardFSError) -> SourceTensor {
            guard let tensor = tensors[name] else {
                throw ShardFSError.badTensor(name: name, reason: "missing from the checkpoint (config.json implies it: \(meaning))")
            }
            guard tensor.shape == shape else {
                throw ShardFSError.badTensor(name: name, reason: "has shape \(tensor.shape) but config.json implies \(shape) (\(meaning))")
            }
            used.insert(name)
            return tensor
        }
        let h = c.hidden, d = c.headDim
        // The config's sizes are checked only one by one; their products must
        // not trap on a config.json that makes them overflow.
        func rows(_ heads: Int, _ field: String) throws(ShardFSError) -> Int {
            let (product, overflow) = heads.multipliedReportingOverflow(by: d)
            guard !overflow else { throw ShardFSError.badConfig(field: field, reason: "\(heads) heads x head_dim \(d) overflows") }
            return product
        }
        let qRows = try rows(c.heads, "num_attention_heads"), kvRows = try rows(c.kvHeads, "num_key_value_heads")
        embed = try take("model.embed_tokens.weight", [c.vocab, h], "[vocab_size, hidden_size]")
        var layers: [Layer] = []
        for n in 0..<c.layers {
            let p = "model.layers.\(n)."
            layers.append(Layer(
                q: try take(p + "self_attn.q_proj.weight", [qRows, h], "[num_attention_heads*head_dim, hidden_size]"),
                k: try take(p + "self_attn.k_proj.weight", [kvRows, h], "[num_key_value_heads*head_dim, hidden_size]"),
                v: try take(p + "self_attn.v_proj.weight", [kvRows, h], "[num_key_value_heads*head_dim, hidden_size]"),
                o: try take(p + "self_attn.o_proj.weight", [h, qRows], "[hidden_size, num_attention_heads*head_dim]"),
                gate: try take(p + "mlp.gate_proj.weight", [c.intermediate, h], "[intermediate_size, hidden_size]"),
                up: try take(p + "mlp.up_proj.weight", [c.intermediate, h], "[intermediate_size, hidden_size]"),
                down: try take(p + "mlp.down_proj.weight", [h, c.intermediate], "[hidden_size, intermediate_size]"),
                inputNorm: try take(p + "input_layernorm.weight", [h], "[hidden_size]"),
                postAttentionNorm: try take(p + "post_attention_layernorm.weight", [h], "[hidden_size]")))
        }
        self.layers = layers
        norm = try take("model.norm.weight", [h], "[hidden_size]")
        if c.tieWordEmbeddings {
            // A tied checkpoint normally omits lm_head; if it ships one anyway,
            // the model ignores it and so do we.
            if tensors["lm_head.weight"] != nil { used.insert("lm_head.weight") }
            lmHead = embed
        } else {
            lmHead = try take("lm_head.weight", [c.vocab, h], "[vocab_size, hidden_size]; tie_word_embeddings is false")
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
