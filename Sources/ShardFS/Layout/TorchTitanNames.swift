/// TorchTitan v0.2.2's Llama3 parameter names (its `models/llama3/model`
/// and the Hugging Face `state_dict_adapter`), and which of them hold q and
/// k in TorchTitan's RoPE row order (docs/formats/dcp.md, "Names and the
/// RoPE permutation").
public enum TorchTitanNames {
    /// One parameter: its TorchTitan name, its Hugging Face name, and for
    /// wq/wk the number of heads whose rows the RoPE permutation reorders.
    public struct Parameter: Equatable, Sendable {
        public let name: String
        public let huggingFaceName: String
        public let permutedHeads: Int?
    }

    /// Every parameter of the model in TorchTitan's `named_parameters()`
    /// order (the order its state dict, and so its checkpoint, lists them):
    /// tok_embeddings; per layer wq, wk, wv, wo, w1, w2, w3, attention_norm,
    /// ffn_norm; norm; output.
    public static func parameters(_ c: ModelConfig) -> [Parameter] {
        var result = [Parameter(name: "tok_embeddings.weight", huggingFaceName: "model.embed_tokens.weight", permutedHeads: nil)]
        for n in 0..<c.layers {
            let t = "layers.\(n).", h = "model.layers.\(n)."
            result += [
                Parameter(name: t + "attention.wq.weight", huggingFaceName: h + "self_attn.q_proj.weight", permutedHeads: c.heads),
                Parameter(name: t + "attention.wk.weight", huggingFaceName: h + "self_attn.k_proj.weight", permutedHeads: c.kvHeads),
                Parameter(name: t + "attention.wv.weight", huggingFaceName: h + "self_attn.v_proj.weight", permutedHeads: nil),
                Parameter(name: t + "attention.wo.weight", huggingFaceName: h + "self_attn.o_proj.weight", permutedHeads: nil),
                Parameter(name: t + "feed_forward.w1.weight", huggingFaceName: h + "mlp.gate_proj.weight", permutedHeads: nil),
                Parameter(name: t + "feed_forward.w2.weight", huggingFaceName: h + "mlp.down_proj.weight", permutedHeads: nil),
                Parameter(name: t + "feed_forward.w3.weight", huggingFaceName: h + "mlp.up_proj.weight", permutedHeads: nil),
                Parameter(name: t + "attention_norm.weight", huggingFaceName: h + "input_layernorm.weight", permutedHeads: nil),
                Parameter(name: t + "ffn_norm.weight", huggingFaceName: h + "post_attention_layernorm.weight", permutedHeads: nil),
            ]
        }
        result.append(Parameter(name: "norm.weight", huggingFaceName: "model.norm.weight", permutedHeads: nil))
        result.append(Parameter(name: "output.weight", huggingFaceName: "lm_head.weight", permutedHeads: nil))
        return result
    }

    /// Refuses a model TorchTitan's Llama3 cannot hold: it derives head_dim
    /// as dim / n_heads, and has an `output` of its own (no tied embedding:
    /// a tied model's weights are written with `output` a copy of the
    /// embedding, the same model; its optimizer state, one moment for the
    /// two, has no such copy, `withOptimizer`).
    public static func check(_ c: ModelConfig, flag: String, withOptimizer: Bool) throws(ShardFSError) {
        guard c.hidden % c.heads == 0, c.headDim == c.hidden / c.heads else {
            throw ShardFSError.badLayout(flag: flag, reason: "TorchTitan's Llama3 takes head_dim = hidden_size / num_attention_heads (\(c.hidden / max(c.heads, 1))), and config.json says head_dim \(c.headDim)")
        }
        guard c.headDim % 2 == 0 else {
            throw ShardFSError.badLayout(flag: flag, reason: "head_dim \(c.headDim) is odd: RoPE pairs its rows")
        }
        guard !(c.tieWordEmbeddings && withOptimizer) else {
            throw ShardFSError.badLayout(flag: flag, reason: "config.json ties the embeddings (tie_word_embeddings): the run kept one Adam state for the embedding and the output layer, and TorchTitan's Llama3 has an output layer of its own whose state would not be the run's; --weights-only writes the weights (output a copy of the embedding)")
        }
    }
}

extension SourceTensor {
    /// This q_proj or k_proj (Hugging Face's rotate-half row order) in
    /// TorchTitan's interleaved RoPE order, as the adapter's `from_hf`
    /// (`_reverse_permute`) gives it: row `h*d + 2i + j` of the result is
    /// row `h*d + j*d/2 + i` of this tensor (d the head dim).
    ///
    /// The result is a view, never a copy: its matrix is [rows/2, 2*columns]
    /// (rows 2k and 2k+1 side by side, which come from one head), whose
    /// halves are strided tiles of the source: wide row `h*d/2 + i` is
    /// source row `h*d + i` then source row `h*d + d/2 + i`. Any whole wide
    /// rows of it are therefore extents of the source, made by the same
    /// machinery as every other tensor (`RowBlock.extents`). Its bytes in
    /// order are exactly the permuted [rows, columns] tensor's.
    public func ropeInterleaved(heads: Int) -> SourceTensor {
        let (rows, columns) = RowBlock.matrixShape(shape)
        let headRows = rows / heads, half = headRows / 2
        let tiles = self.tilesOrWhole
        var result: [TensorTile] = []
        for tile in tiles {
            for h in 0..<heads {
                for j in 0..<2 {
                    let first = h * headRows + j * half
                    let low = max(first, tile.rows.lowerBound), high = min(first + half, tile.rows.upperBound)
                    guard low < high else { continue }
                    let wideRow = h * half + (low - first)
                    result.append(TensorTile(
                        rows: wideRow..<wideRow + (high - low),
                        columns: j * columns + tile.columns.lowerBound..<j * columns + tile.columns.upperBound,
                        fileIndex: tile.fileIndex, offset: tile.offset + (low - tile.rows.lowerBound) * tile.rowStride,
                        rowStride: tile.rowStride, elementStride: tile.elementStride))
                }
            }
        }
        return SourceTensor(name: name, dtype: dtype, shape: [rows / 2, 2 * columns], tiles: result)
    }
}
