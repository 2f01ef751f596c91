/// The order of `named_parameters()` of NxD's training Llama
/// (`modeling_llama_nxd.py`), the order its optimizer numbers parameters
/// in: modules in the order `__init__` registers them. A pipeline rank holds
/// a part of the model, in the same order.
///
///     model.embed_tokens.weight
///     model.layers.N.self_attn.qkv_proj.weight_q, weight_k, weight_v   (or weight_qkv fused,
///                   or self_attn.q_proj, k_proj, v_proj without --qkv-linear)
///     model.layers.N.self_attn.o_proj.weight
///     model.layers.N.mlp.gate_up_proj.weight, mlp.down_proj.weight
///     model.layers.N.input_layernorm.weight, post_attention_layernorm.weight
///     model.norm.weight
///     lm_head.weight
///
/// Rank files written by the trainer hold their keys in this order; NxD's
/// converter (and ShardFS's pt files, which follow it) put a fused
/// `weight_qkv` last instead, which only `load_state_dict` reads, by name.
public enum LlamaParameterOrder {
    static let layerPositions: [String: Int] = [
        "self_attn.qkv_proj.weight_q": 0, "self_attn.qkv_proj.weight_k": 1, "self_attn.qkv_proj.weight_v": 2,
        "self_attn.qkv_proj.weight_qkv": 0,
        "self_attn.q_proj.weight": 0, "self_attn.k_proj.weight": 1, "self_attn.v_proj.weight": 2,
        "self_attn.o_proj.weight": 3,
        "mlp.gate_up_proj.weight": 4, "mlp.down_proj.weight": 5,
        "input_layernorm.weight": 6, "post_attention_layernorm.weight": 7,
    ]

    /// Where `key` sorts, or nil for a key NxD's Llama does not have.
    static func rank(_ key: String) -> (Int, Int, Int)? {
        switch key {
        case "model.embed_tokens.weight": return (0, 0, 0)
        case "model.norm.weight": return (2, 0, 0)
        case "lm_head.weight": return (3, 0, 0)
        default:
            guard let layer = LlamaWeights.layerNumber(key) else { return nil }
            let rest = String(key.dropFirst("model.layers.\(layer).".count))
            guard let position = layerPositions[rest] else { return nil }
            return (1, layer, position)
        }
    }

    /// `keys` in `named_parameters()` order, or the first key it does not know.
    public static func sorted(_ keys: [String]) -> Result<[String], UnknownKey> {
        var ranked: [((Int, Int, Int), String)] = []
        for key in keys {
            guard let r = rank(key) else { return .failure(UnknownKey(key: key)) }
            ranked.append((r, key))
        }
        return .success(ranked.sorted { $0.0 < $1.0 }.map(\.1))
    }

    public struct UnknownKey: Error, Equatable {
        public let key: String
    }
}
