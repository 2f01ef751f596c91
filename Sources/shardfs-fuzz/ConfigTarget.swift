import ShardFS

/// The config.json reader: an accepted config has the properties the layout
/// relies on.
enum ConfigTarget {
    static func run(_ input: [UInt8]) {
        guard let c = try? ModelConfig(json: input) else { return }
        invariant(c.layers > 0 && c.hidden > 0 && c.heads > 0 && c.kvHeads > 0 && c.intermediate > 0 && c.vocab > 0,
                  "a size is not positive")
        invariant(c.headDim > 0, "head_dim \(c.headDim) is not positive")
        invariant(c.heads % c.kvHeads == 0, "num_key_value_heads does not divide num_attention_heads")
        invariant(ModelConfig.supportedArchitectures.contains(c.architecture), "architecture \(c.architecture) accepted")
    }
}
