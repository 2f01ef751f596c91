import Foundation
import Testing
@testable import ShardFS

/// Inputs the fuzz targets (Sources/shardfs-fuzz) found or were seeded with
/// that trapped instead of being refused: each must now be a ShardFSError
/// naming the field or flag at fault. The inputs are in fuzz/corpus too.
@Suite struct HostileInputTests {
    /// The shape of a small Llama, for layouts whose flags are the hostile part.
    static let config = ModelConfig(layers: 4, hidden: 64, heads: 8, kvHeads: 2, intermediate: 128, vocab: 256, headDim: 8)

    /// num_attention_heads x head_dim past 2^63 (fuzz/corpus/planner/extreme-heads):
    /// the q_proj shape used to be computed with a trapping multiplication.
    @Test func headsTimesHeadDimOverflow() {
        let c = ModelConfig(layers: 1, hidden: 64, heads: 1 << 32, kvHeads: 1 << 32, intermediate: 128, vocab: 256, headDim: 1 << 32)
        let error = expectRefusal(mentioning: ["num_attention_heads", "overflows"]) { () throws(ShardFSError) in
            try LlamaWeights(config: c, tensors: [:])
        }
        #expect(error == .badConfig(field: "num_attention_heads", reason: "4294967296 heads x head_dim 4294967296 overflows"))
    }

    @Test func kvHeadsTimesHeadDimOverflow() {
        // The memberwise init lets kv heads exceed heads: 1 x 2^30 fits, 2^40 x 2^30 does not.
        let c = ModelConfig(layers: 1, hidden: 64, heads: 1, kvHeads: 1 << 40, intermediate: 128, vocab: 256, headDim: 1 << 30)
        expectRefusal(mentioning: ["num_key_value_heads", "overflows"]) { () throws(ShardFSError) in
            try LlamaWeights(config: c, tensors: [:])
        }
    }

    /// pp-size x virtual-pp-size past 2^63 (fuzz/corpus/planner/extreme-pp).
    @Test func stageCountOverflow() {
        let error = expectRefusal(mentioning: ["--pp-size", "num_hidden_layers (4)", "too many"]) { () throws(ShardFSError) in
            try LayoutPlanner.pipelineLayers(layers: 4, options: LayoutOptions(ppSize: 1 << 32, virtualPPSize: 1 << 32))
        }
        if case .badLayout(let flag, _)? = error { #expect(flag == "--pp-size") }
    }

    /// num_key_value_heads x kv-size-multiplier past 2^63, on both backends.
    @Test func kvMultiplierOverflow() {
        for backend in HardwareBackend.allCases {
            let options = LayoutOptions(tpSize: 2, kvSizeMultiplier: Int.max, qkvLinear: true, backend: backend)
            expectRefusal(mentioning: ["--kv-size-multiplier", "\(Int.max)"]) { () throws(ShardFSError) in
                try TensorCutter(config: Self.config, options: options)
            }
        }
    }

    /// A plan is built whole in memory: a layout of more than 65536 rank files
    /// (or whose count overflows) is refused before any is planned.
    @Test func rankFileCount() throws {
        try LayoutPlanner.checkFileCount(LayoutOptions(tpSize: 256, ppSize: 256))  // 65536: allowed
        expectRefusal(mentioning: ["--tp-size", "65536"]) { () throws(ShardFSError) in
            try LayoutPlanner.checkFileCount(LayoutOptions(tpSize: 256, ppSize: 257))
        }
        expectRefusal(mentioning: ["--tp-size"]) { () throws(ShardFSError) in
            try LayoutPlanner.checkFileCount(LayoutOptions(tpSize: 1 << 32, ppSize: 1 << 32))
        }
    }

    /// A header length near 2^64 is refused after reading the 8 length bytes
    /// alone: nothing of the announced size is read or allocated.
    @Test func hugeHeaderLengthReadsOnlyTheLength() {
        for length: UInt64 in [UInt64.max, 1 << 63, 100_000_001] {
            let prefix = (0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) }
            var reads: [(Int, Int)] = []
            let error = refusal { () throws(ShardFSError) in
                try SafetensorsHeader(file: "big.safetensors", fileSize: Int.max) { (offset, count) throws(ShardFSError) in
                    reads.append((offset, count))
                    return offset == 0 && count == 8 ? prefix : []
                }
            }
            #expect(error?.description.contains("exceeds the safetensors limit of 100000000 bytes") == true, "\(length)")
            #expect(reads.count == 1 && reads[0] == (0, 8), "\(length): reads \(reads)")
        }
    }

    /// The config: num_hidden_layers 10^12 (or 2*10^9) grew `plan`
    /// to 14.6 GB building that many names. It is compared with the layers
    /// the files hold first, and refused naming the field.
    @Test func aConfigClaimingMoreLayersThanTheFilesHold() {
        var tensors: [String: SourceTensor] = [:]
        for n in 0..<2 {
            for suffix in ["self_attn.q_proj.weight", "mlp.up_proj.weight"] {
                let name = "model.layers.\(n).\(suffix)"
                tensors[name] = SourceTensor(name: name, dtype: .bfloat16, shape: [64, 64], fileIndex: 0, offset: 0)
            }
        }
        for layers in [1_000_000_000_000, 2_000_000_000, 3] {
            let c = ModelConfig(layers: layers, hidden: 64, heads: 8, kvHeads: 2, intermediate: 128, vocab: 256, headDim: 8)
            let error = refusal { () throws(ShardFSError) in _ = try LlamaWeights(config: c, tensors: tensors) }
            #expect(error == .badConfig(field: "num_hidden_layers",
                                        reason: "\(layers), but the checkpoint holds tensors of layers 0 to 1 only (is config.json the model's own?)"))
        }
        let none = ModelConfig(layers: 5, hidden: 64, heads: 8, kvHeads: 2, intermediate: 128, vocab: 256, headDim: 8)
        #expect(refusal { () throws(ShardFSError) in _ = try LlamaWeights(config: none, tensors: [:]) }
            == .badConfig(field: "num_hidden_layers", reason: "5, but the checkpoint holds no model.layers.* tensors"))
    }

    /// A layer number of more than 9 digits is no layer (it is refused as an
    /// unknown tensor later): it must not make the layer count huge.
    @Test func layerNumbersAreBounded() {
        #expect(LlamaWeights.layerNumber("model.layers.79.mlp.up_proj.weight") == 79)
        #expect(LlamaWeights.layerNumber("model.layers.9999999999.mlp.up_proj.weight") == nil)
        #expect(LlamaWeights.layerNumber("model.layers..x") == nil)
        #expect(LlamaWeights.layersPresent(["model.norm.weight", "model.layers.3.x", "model.layers.1.y"]) == 4)
    }

    /// The same for an NxD tag: refused after its rank files' keys are read,
    /// before a tensor file is, naming the field.
    @Test func aTagWithAConfigClaimingTooManyLayers() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let (model, tag) = try NxDSourceTests.tag(LayoutOptions(tpSize: 2, format: .xser), in: dir)
        var json = try String(contentsOfFile: model.directory + "/config.json", encoding: .utf8)
        json = json.replacingOccurrences(of: "\"num_hidden_layers\": 2", with: "\"num_hidden_layers\": 1000000000000")
        try dir.write("huge.json", Array(json.utf8))
        // Tensor files are never opened: remove them all.
        for rank in ["dp_rank_00_tp_rank_00_pp_rank_00.pt", "dp_rank_00_tp_rank_01_pp_rank_00.pt"] {
            for entry in try FileManager.default.contentsOfDirectory(atPath: tag + "/model/" + rank + ".tensors") where entry != "tensor_0.pt" {
                try FileManager.default.removeItem(atPath: tag + "/model/" + rank + ".tensors/" + entry)
            }
        }
        let error = refusal { () throws(ShardFSError) in
            _ = try Checkpoint.open(tag, options: SourceOptions(config: dir.path + "/huge.json"))
        }
        #expect(error == .badConfig(field: "num_hidden_layers",
                                    reason: "1000000000000, but the tag's rank files hold tensors of layers 0 to 1 only (is config.json the model's own?)"))
    }
}
