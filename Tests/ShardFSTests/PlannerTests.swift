import Foundation
import Testing
@testable import ShardFS

/// The layout planner against docs/formats/nxd-layout.md, on fabricated tensors (no files:
/// file index 0, made-up offsets). Every expected cut is written from the
/// spec's formulas.
@Suite struct PlannerTests {
    // MARK: Fixtures

    /// The tensors of a Llama checkpoint for `c` ("Inputs" in docs/formats/nxd-layout.md).
    static func llamaTensors(_ c: ModelConfig, dtype: DType = .bfloat16, lmHead: Bool = true) -> [String: SourceTensor] {
        let h = c.hidden, d = c.headDim
        var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [c.vocab, h])]
        for n in 0..<c.layers {
            let p = "model.layers.\(n)."
            shapes += [
                (p + "self_attn.q_proj.weight", [c.heads * d, h]),
                (p + "self_attn.k_proj.weight", [c.kvHeads * d, h]),
                (p + "self_attn.v_proj.weight", [c.kvHeads * d, h]),
                (p + "self_attn.o_proj.weight", [h, c.heads * d]),
                (p + "mlp.gate_proj.weight", [c.intermediate, h]),
                (p + "mlp.up_proj.weight", [c.intermediate, h]),
                (p + "mlp.down_proj.weight", [h, c.intermediate]),
                (p + "input_layernorm.weight", [h]),
                (p + "post_attention_layernorm.weight", [h]),
            ]
        }
        shapes.append(("model.norm.weight", [h]))
        if lmHead { shapes.append(("lm_head.weight", [c.vocab, h])) }
        var result: [String: SourceTensor] = [:]
        var offset = 4096
        for (name, shape) in shapes {
            result[name] = SourceTensor(name: name, dtype: dtype, shape: shape, fileIndex: 0, offset: offset)
            offset += shape.reduce(dtype.size, *)
        }
        return result
    }

    static func plan(_ c: ModelConfig, _ o: LayoutOptions, tensors: [String: SourceTensor]? = nil) throws(ShardFSError) -> LayoutPlan {
        let weights = try LlamaWeights(config: c, tensors: tensors ?? llamaTensors(c, lmHead: !c.tieWordEmbeddings))
        return try LayoutPlanner.plan(config: c, weights: weights, options: o)
    }

    /// A rectangle of a named source tensor (1-D tensors are one row).
    struct Span: Equatable, CustomStringConvertible {
        let tensor: String
        let rows: Range<Int>
        let columns: Range<Int>
        init(_ tensor: String, _ rows: Range<Int>, _ columns: Range<Int>) {
            self.tensor = tensor
            self.rows = rows
            self.columns = columns
        }
        var description: String { "\(tensor)[\(rows), \(columns)]" }
    }

    struct Expected: Equatable, CustomStringConvertible {
        let key: String
        let shape: [Int]
        let spans: [Span]
        var description: String { "\(key) \(shape) \(spans)" }
    }

    /// A planned tensor in the test's terms; row runs of the same rectangle
    /// that continue each other are merged, so only what the bytes hold counts.
    static func actual(_ t: PlannedTensor) -> Expected {
        var spans: [Span] = []
        for b in t.blocks {
            let s = Span(b.tensor.name, b.rows, b.columns)
            if let last = spans.last, last.tensor == s.tensor, last.columns == s.columns, last.rows.upperBound == s.rows.lowerBound {
                spans[spans.count - 1] = Span(s.tensor, last.rows.lowerBound..<s.rows.upperBound, s.columns)
            } else {
                spans.append(s)
            }
        }
        return Expected(key: t.key, shape: t.shape, spans: spans)
    }

    static func expectTensors(_ file: RankFile, _ expected: [Expected], sourceLocation: SourceLocation = #_sourceLocation) {
        let got = file.tensors.map(actual)
        if got.map(\.key) != expected.map(\.key) {
            Issue.record("\(file.path): keys \(got.map(\.key)) != expected \(expected.map(\.key))", sourceLocation: sourceLocation)
            return
        }
        for (g, e) in zip(got, expected) where g != e {
            Issue.record("\(file.path): got \(g), expected \(e)", sourceLocation: sourceLocation)
            return
        }
    }

    static func layer(_ n: Int, _ suffix: String) -> String { "model.layers.\(n).\(suffix)" }

    // MARK: The spec's example: Llama-3-70B, T=32, P=8, m=4, qkv_linear, fuse_qkv, trn1

    static let llama70B = ModelConfig(layers: 80, hidden: 8192, heads: 64, kvHeads: 8, intermediate: 28672,
                                      vocab: 128_256, dtype: .bfloat16)

    /// A 70B layer's MLP and norms on TP rank `tpRank` of 32: the same in
    /// every layout of these tests (896 rows of the intermediate each).
    static func llama70BMLPAndNorms(layer n: Int, tpRank r: Int) -> [Expected] {
        let h = 8192
        let l = { (s: String) in Self.layer(n, s) }
        return [
            Expected(key: l("mlp.gate_up_proj.weight"), shape: [1792, h],
                     spans: [Span(l("mlp.gate_proj.weight"), 896 * r..<896 * (r + 1), 0..<h),
                             Span(l("mlp.up_proj.weight"), 896 * r..<896 * (r + 1), 0..<h)]),
            Expected(key: l("mlp.down_proj.weight"), shape: [h, 896],
                     spans: [Span(l("mlp.down_proj.weight"), 0..<h, 896 * r..<896 * (r + 1))]),
            Expected(key: l("input_layernorm.weight"), shape: [h], spans: [Span(l("input_layernorm.weight"), 0..<1, 0..<h)]),
            Expected(key: l("post_attention_layernorm.weight"), shape: [h],
                     spans: [Span(l("post_attention_layernorm.weight"), 0..<1, 0..<h)]),
        ]
    }

    @Test func llama70BSeedLayout() throws {
        let c = Self.llama70B
        let o = LayoutOptions(tpSize: 32, ppSize: 8, kvSizeMultiplier: 4, qkvLinear: true, fuseQKV: true, backend: .trn1)
        let plan = try Self.plan(c, o)
        #expect(plan.dtype == .bfloat16)
        #expect(plan.files.count == 256)
        #expect(plan.layersOfPipelineRank == (0..<8).map { Array($0 * 10..<$0 * 10 + 10) })
        let h = 8192
        for (index, file) in plan.files.enumerated() {
            let r = index / 8, pp = index % 8  // tp-major
            #expect(file.tpRank == r && file.ppRank == pp)
            #expect(file.path == String(format: "model/dp_rank_00_tp_rank_%02d_pp_rank_%02d.pt", r, pp))
            let g = 4 * (r % 8) + r / 8  // Q heads 2g, 2g+1 (128 rows each)
            let kv = r % 8
            var expected: [Expected] = []
            if pp == 0 {
                expected.append(Expected(key: "model.embed_tokens.weight", shape: [4008, h],
                                         spans: [Span("model.embed_tokens.weight", 4008 * r..<4008 * (r + 1), 0..<h)]))
            }
            var fused: [Expected] = []
            for n in pp * 10..<pp * 10 + 10 {
                let l = { (s: String) in Self.layer(n, s) }
                expected += [
                    Expected(key: l("self_attn.o_proj.weight"), shape: [h, 256],
                             spans: [Span(l("self_attn.o_proj.weight"), 0..<h, 256 * g..<256 * g + 256)]),
                ] + Self.llama70BMLPAndNorms(layer: n, tpRank: r)
                fused.append(Expected(key: l("self_attn.qkv_proj.weight_qkv"), shape: [512, h], spans: [
                    Span(l("self_attn.q_proj.weight"), 256 * g..<256 * g + 256, 0..<h),
                    Span(l("self_attn.k_proj.weight"), 128 * kv..<128 * kv + 128, 0..<h),
                    Span(l("self_attn.v_proj.weight"), 128 * kv..<128 * kv + 128, 0..<h),
                ]))
            }
            if pp == 7 {
                expected.append(Expected(key: "model.norm.weight", shape: [h], spans: [Span("model.norm.weight", 0..<1, 0..<h)]))
                expected.append(Expected(key: "lm_head.weight", shape: [4008, h],
                                         spans: [Span("lm_head.weight", 4008 * r..<4008 * (r + 1), 0..<h)]))
            }
            Self.expectTensors(file, expected + fused)
            #expect(file.tensors.allSatisfy { $0.dtype == .bfloat16 })
        }
        // Spot checks of the head formula against hand-computed values.
        let qRows = { (r: Int) in plan.files[r * 8].tensors.first { $0.key.hasSuffix("weight_qkv") }!.blocks.first!.rows }
        #expect(qRows(0) == 0..<256)            // g = 0: heads 0, 1
        #expect(qRows(1) == 1024..<1280)        // g = 4: heads 8, 9
        #expect(qRows(8) == 256..<512)          // g = 1: heads 2, 3
        #expect(qRows(31) == 7936..<8192)       // g = 31: heads 62, 63
    }

    /// trn2, m = 4: Q and O heads in natural order (rank r: heads 2r, 2r+1);
    /// K/V repeat_interleave'd, so rank r holds KV head r / 4.
    @Test func llama70BTrn2() throws {
        let c = Self.llama70B
        let o = LayoutOptions(tpSize: 32, ppSize: 8, kvSizeMultiplier: 4, qkvLinear: true, backend: .trn2)
        let plan = try Self.plan(c, o)
        #expect(plan.files.count == 256)
        let h = 8192
        for file in plan.files where file.ppRank == 3 {
            let r = file.tpRank, kv = r / 4
            var expected: [Expected] = []
            for n in 30..<40 {
                let l = { (s: String) in Self.layer(n, s) }
                expected += [
                    Expected(key: l("self_attn.qkv_proj.weight_q"), shape: [256, h],
                             spans: [Span(l("self_attn.q_proj.weight"), 256 * r..<256 * r + 256, 0..<h)]),
                    Expected(key: l("self_attn.qkv_proj.weight_k"), shape: [128, h],
                             spans: [Span(l("self_attn.k_proj.weight"), 128 * kv..<128 * kv + 128, 0..<h)]),
                    Expected(key: l("self_attn.qkv_proj.weight_v"), shape: [128, h],
                             spans: [Span(l("self_attn.v_proj.weight"), 128 * kv..<128 * kv + 128, 0..<h)]),
                    Expected(key: l("self_attn.o_proj.weight"), shape: [h, 256],
                             spans: [Span(l("self_attn.o_proj.weight"), 0..<h, 256 * r..<256 * r + 256)]),
                ] + Self.llama70BMLPAndNorms(layer: n, tpRank: r)
            }
            Self.expectTensors(file, expected)
        }
    }

    // MARK: Small models

    /// h = 128, Hq = 16, Hkv = 8, d = 8 (rows per head), I = 64, V = 32.
    static let gqa = ModelConfig(layers: 2, hidden: 128, heads: 16, kvHeads: 8, intermediate: 64, vocab: 32, dtype: .bfloat16)

    /// trn2, m = 1, Hkv % T == 0: T = 4, so each rank holds 2 KV heads (2r, 2r+1)
    /// and 4 Q heads (4r ... 4r+3).
    @Test func trn2MultiplierOneSeveralKVHeadsPerRank() throws {
        let plan = try Self.plan(Self.gqa, LayoutOptions(tpSize: 4, qkvLinear: true, fuseQKV: true, backend: .trn2))
        #expect(plan.files.count == 4)
        for file in plan.files {
            let r = file.tpRank
            let qkv = file.tensors.filter { $0.key.hasSuffix("weight_qkv") }.map(Self.actual)
            #expect(qkv.count == 2)
            for (n, t) in qkv.enumerated() {
                #expect(t == Expected(key: Self.layer(n, "self_attn.qkv_proj.weight_qkv"), shape: [64, 128], spans: [
                    Span(Self.layer(n, "self_attn.q_proj.weight"), 32 * r..<32 * r + 32, 0..<128),
                    Span(Self.layer(n, "self_attn.k_proj.weight"), 16 * r..<16 * r + 16, 0..<128),
                    Span(Self.layer(n, "self_attn.v_proj.weight"), 16 * r..<16 * r + 16, 0..<128),
                ]))
            }
            let o = file.tensors.first { $0.key == Self.layer(1, "self_attn.o_proj.weight") }.map(Self.actual)
            #expect(o?.spans == [Span(Self.layer(1, "self_attn.o_proj.weight"), 0..<128, 32 * r..<32 * r + 32)])
        }
    }

    /// trn1 with m = 2 (Hq = 8, Hkv = 2, T = 4): g = (r % 2) * 2 + r / 2, Q heads
    /// 2g, 2g+1; K/V tiled [K0, K1, K0, K1] so rank r holds KV head r % 2.
    @Test func trn1TiledKVHeads() throws {
        let c = ModelConfig(layers: 1, hidden: 32, heads: 8, kvHeads: 2, intermediate: 16, vocab: 8, dtype: .float32)
        let plan = try Self.plan(c, LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, backend: .trn1))
        #expect(plan.dtype == .float32)
        // (first Q head, KV head) by rank, by hand: r=0: g=0; r=1: g=2; r=2: g=1; r=3: g=3.
        let table = [(0, 0), (4, 1), (2, 0), (6, 1)]
        for file in plan.files {
            let (q, kv) = table[file.tpRank]
            let tensors = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.key, Self.actual($0)) })
            #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_q")]?.spans == [Span(Self.layer(0, "self_attn.q_proj.weight"), 4 * q..<4 * q + 8, 0..<32)])
            #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_k")]?.spans == [Span(Self.layer(0, "self_attn.k_proj.weight"), 4 * kv..<4 * kv + 4, 0..<32)])
            #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_v")]?.spans == [Span(Self.layer(0, "self_attn.v_proj.weight"), 4 * kv..<4 * kv + 4, 0..<32)])
            #expect(tensors[Self.layer(0, "self_attn.o_proj.weight")]?.spans == [Span(Self.layer(0, "self_attn.o_proj.weight"), 0..<32, 4 * q..<4 * q + 8)])
            #expect(file.tensors.map(\.key) == [
                "model.embed_tokens.weight",
                Self.layer(0, "self_attn.qkv_proj.weight_q"), Self.layer(0, "self_attn.qkv_proj.weight_k"),
                Self.layer(0, "self_attn.qkv_proj.weight_v"), Self.layer(0, "self_attn.o_proj.weight"),
                Self.layer(0, "mlp.gate_up_proj.weight"), Self.layer(0, "mlp.down_proj.weight"),
                Self.layer(0, "input_layernorm.weight"), Self.layer(0, "post_attention_layernorm.weight"),
                "model.norm.weight", "lm_head.weight",
            ])
        }
    }

    /// trn1, m = 1, T dividing Hkv (as NxD's trainer, `GQAQKVColumnParallelLinear`,
    /// trains; its converter refuses): Hq = 8, Hkv = 4, h = 32, d = 4, T = 2.
    /// Rank r holds KV heads 2r, 2r+1 (K/V rows 8r ..< 8r+8) and their Q heads
    /// 4r ... 4r+3 (Q rows and O columns 16r ..< 16r+16), cut contiguously.
    /// (NxD's converter formula g = (r % Hkv) * (T / Hkv) + r / Hkv would give
    /// rank 1 Q heads 0 ... 3, KV head 0's, with KV heads 2 and 3.)
    @Test func trn1MultiplierOneSeveralKVHeadsPerRank() throws {
        let c = ModelConfig(layers: 1, hidden: 32, heads: 8, kvHeads: 4, intermediate: 16, vocab: 8, dtype: .float32)
        for fused in [false, true] {
            let plan = try Self.plan(c, LayoutOptions(tpSize: 2, qkvLinear: true, fuseQKV: fused, backend: .trn1))
            #expect(plan.files.count == 2)
            for file in plan.files {
                let r = file.tpRank
                let tensors = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.key, Self.actual($0)) })
                let q = Span(Self.layer(0, "self_attn.q_proj.weight"), 16 * r..<16 * r + 16, 0..<32)
                let k = Span(Self.layer(0, "self_attn.k_proj.weight"), 8 * r..<8 * r + 8, 0..<32)
                let v = Span(Self.layer(0, "self_attn.v_proj.weight"), 8 * r..<8 * r + 8, 0..<32)
                if fused {
                    #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_qkv")] == Expected(
                        key: Self.layer(0, "self_attn.qkv_proj.weight_qkv"), shape: [32, 32], spans: [q, k, v]))
                } else {
                    #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_q")] == Expected(key: Self.layer(0, "self_attn.qkv_proj.weight_q"), shape: [16, 32], spans: [q]))
                    #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_k")] == Expected(key: Self.layer(0, "self_attn.qkv_proj.weight_k"), shape: [8, 32], spans: [k]))
                    #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_v")] == Expected(key: Self.layer(0, "self_attn.qkv_proj.weight_v"), shape: [8, 32], spans: [v]))
                }
                #expect(tensors[Self.layer(0, "self_attn.o_proj.weight")] == Expected(
                    key: Self.layer(0, "self_attn.o_proj.weight"), shape: [32, 16], spans: [Span(Self.layer(0, "self_attn.o_proj.weight"), 0..<32, 16 * r..<16 * r + 16)]))
            }
        }
    }

    /// trn1, m = 1, T = 1 (a single rank holds every head, Hkv = 4 > T):
    /// every projection whole, under the qkv_linear names.
    @Test func trn1MultiplierOneAtTPOne() throws {
        let c = ModelConfig(layers: 1, hidden: 32, heads: 8, kvHeads: 4, intermediate: 16, vocab: 8, dtype: .float32)
        let plan = try Self.plan(c, LayoutOptions(tpSize: 1, qkvLinear: true, backend: .trn1))
        let file = try #require(plan.files.first)
        let tensors = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.key, Self.actual($0)) })
        #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_q")]?.spans == [Span(Self.layer(0, "self_attn.q_proj.weight"), 0..<32, 0..<32)])
        #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_k")]?.spans == [Span(Self.layer(0, "self_attn.k_proj.weight"), 0..<16, 0..<32)])
        #expect(tensors[Self.layer(0, "self_attn.qkv_proj.weight_v")]?.spans == [Span(Self.layer(0, "self_attn.v_proj.weight"), 0..<16, 0..<32)])
        #expect(tensors[Self.layer(0, "self_attn.o_proj.weight")]?.spans == [Span(Self.layer(0, "self_attn.o_proj.weight"), 0..<32, 0..<32)])
    }

    /// h = 16, Hq = 4, Hkv = 2, d = 4, I = 32, V = 64.
    static let small = ModelConfig(layers: 2, hidden: 16, heads: 4, kvHeads: 2, intermediate: 32, vocab: 64, dtype: .bfloat16)

    /// Without qkv_linear: q, k, v cut on dim 0; o and down on dim 1 (columns).
    @Test func withoutQKVLinear() throws {
        let plan = try Self.plan(Self.small, LayoutOptions(tpSize: 2, ppSize: 1))
        #expect(plan.files.count == 2)
        for file in plan.files {
            let r = file.tpRank
            var expected = [Expected(key: "model.embed_tokens.weight", shape: [32, 16],
                                     spans: [Span("model.embed_tokens.weight", 32 * r..<32 * r + 32, 0..<16)])]
            for n in 0..<2 {
                let l = { (s: String) in Self.layer(n, s) }
                expected += [
                    Expected(key: l("self_attn.q_proj.weight"), shape: [8, 16], spans: [Span(l("self_attn.q_proj.weight"), 8 * r..<8 * r + 8, 0..<16)]),
                    Expected(key: l("self_attn.k_proj.weight"), shape: [4, 16], spans: [Span(l("self_attn.k_proj.weight"), 4 * r..<4 * r + 4, 0..<16)]),
                    Expected(key: l("self_attn.v_proj.weight"), shape: [4, 16], spans: [Span(l("self_attn.v_proj.weight"), 4 * r..<4 * r + 4, 0..<16)]),
                    Expected(key: l("self_attn.o_proj.weight"), shape: [16, 8], spans: [Span(l("self_attn.o_proj.weight"), 0..<16, 8 * r..<8 * r + 8)]),
                    Expected(key: l("mlp.gate_up_proj.weight"), shape: [32, 16],
                             spans: [Span(l("mlp.gate_proj.weight"), 16 * r..<16 * r + 16, 0..<16),
                                     Span(l("mlp.up_proj.weight"), 16 * r..<16 * r + 16, 0..<16)]),
                    Expected(key: l("mlp.down_proj.weight"), shape: [16, 16], spans: [Span(l("mlp.down_proj.weight"), 0..<16, 16 * r..<16 * r + 16)]),
                    Expected(key: l("input_layernorm.weight"), shape: [16], spans: [Span(l("input_layernorm.weight"), 0..<1, 0..<16)]),
                    Expected(key: l("post_attention_layernorm.weight"), shape: [16], spans: [Span(l("post_attention_layernorm.weight"), 0..<1, 0..<16)]),
                ]
            }
            expected += [
                Expected(key: "model.norm.weight", shape: [16], spans: [Span("model.norm.weight", 0..<1, 0..<16)]),
                Expected(key: "lm_head.weight", shape: [32, 16], spans: [Span("lm_head.weight", 32 * r..<32 * r + 32, 0..<16)]),
            ]
            Self.expectTensors(file, expected)
        }
    }

    /// An explicit head_dim that differs from h / Hq is fine without qkv_linear.
    @Test func explicitHeadDimWithoutQKVLinear() throws {
        let c = ModelConfig(layers: 1, hidden: 16, heads: 4, kvHeads: 2, intermediate: 32, vocab: 64, headDim: 8, dtype: .bfloat16)
        let plan = try Self.plan(c, LayoutOptions(tpSize: 2))
        let q = plan.files[1].tensors.first { $0.key == Self.layer(0, "self_attn.q_proj.weight") }.map(Self.actual)
        #expect(q == Expected(key: Self.layer(0, "self_attn.q_proj.weight"), shape: [16, 16],
                              spans: [Span(Self.layer(0, "self_attn.q_proj.weight"), 16..<32, 0..<16)]))
        let o = plan.files[1].tensors.first { $0.key == Self.layer(0, "self_attn.o_proj.weight") }.map(Self.actual)
        #expect(o?.shape == [16, 16])
    }

    /// Tied embeddings: no lm_head tensor in the files; the last pipeline rank
    /// still gets lm_head.weight, cut from embed_tokens.
    @Test func tiedEmbeddings() throws {
        var c = Self.small
        c.tieWordEmbeddings = true
        let tensors = Self.llamaTensors(c, lmHead: false)
        #expect(tensors["lm_head.weight"] == nil)
        let plan = try Self.plan(c, LayoutOptions(tpSize: 2, ppSize: 2), tensors: tensors)
        for file in plan.files {
            let r = file.tpRank
            let keys = file.tensors.map(\.key)
            #expect(keys.contains("model.embed_tokens.weight") == (file.ppRank == 0))
            #expect(keys.contains("lm_head.weight") == (file.ppRank == 1))
            if file.ppRank == 1 {
                #expect(Array(keys.suffix(2)) == ["model.norm.weight", "lm_head.weight"])
                let head = file.tensors.last.map(Self.actual)
                #expect(head == Expected(key: "lm_head.weight", shape: [32, 16],
                                         spans: [Span("model.embed_tokens.weight", 32 * r..<32 * r + 32, 0..<16)]))
            }
        }
    }

    // MARK: Pipeline stages

    @Test func stageSplit() throws {
        #expect(try LayoutPlanner.pipelineLayers(layers: 5, options: LayoutOptions(ppSize: 3)) == [[0], [1, 2], [3, 4]])
        #expect(try LayoutPlanner.pipelineLayers(layers: 10, options: LayoutOptions(ppSize: 2, virtualPPSize: 2))
                == [[0, 1, 4, 5, 6], [2, 3, 7, 8, 9]])
        // L = 7 over 4 stages: 1 each, the last 3 one more: [0] [1,2] [3,4] [5,6].
        #expect(try LayoutPlanner.pipelineLayers(layers: 7, options: LayoutOptions(ppSize: 2, virtualPPSize: 2))
                == [[0, 3, 4], [1, 2, 5, 6]])
        #expect(try LayoutPlanner.pipelineLayers(layers: 4, options: LayoutOptions(ppSize: 4)) == [[0], [1], [2], [3]])
    }

    /// Layer tensors keep their global layer number in a pipeline rank's file.
    @Test func stageSplitInRankFiles() throws {
        var c = Self.small
        c.layers = 10
        let plan = try Self.plan(c, LayoutOptions(tpSize: 1, ppSize: 2, virtualPPSize: 2))
        #expect(plan.layersOfPipelineRank == [[0, 1, 4, 5, 6], [2, 3, 7, 8, 9]])
        for file in plan.files {
            let layers = file.tensors.compactMap { t -> Int? in
                guard t.key.hasPrefix("model.layers.") else { return nil }
                return Int(t.key.dropFirst("model.layers.".count).prefix { $0 != "." })
            }
            var seen: [Int] = []
            for n in layers where seen.last != n { seen.append(n) }
            #expect(seen == (file.ppRank == 0 ? [0, 1, 4, 5, 6] : [2, 3, 7, 8, 9]))
            #expect(file.tensors.first?.key == (file.ppRank == 0 ? "model.embed_tokens.weight" : Self.layer(2, "self_attn.q_proj.weight")))
        }
    }

    // MARK: Refusals

    @Test func refusesTPNotDividingVocab() {
        var c = Self.small
        c.vocab = 65
        expectRefusal(mentioning: ["--tp-size", "vocab_size"]) { () throws(ShardFSError) in try Self.plan(c, LayoutOptions(tpSize: 2)) }
    }

    @Test func refusesTPNotDividingIntermediate() {
        var c = Self.small
        c.intermediate = 33
        expectRefusal(mentioning: ["--tp-size", "intermediate_size"]) { () throws(ShardFSError) in try Self.plan(c, LayoutOptions(tpSize: 2)) }
    }

    @Test func refusesFewerLayersThanStages() {
        expectRefusal(mentioning: ["--pp-size", "num_hidden_layers"]) { () throws(ShardFSError) in
            try Self.plan(Self.small, LayoutOptions(ppSize: 2, virtualPPSize: 2))
        }
        expectRefusal(mentioning: ["--pp-size", "num_hidden_layers"]) { () throws(ShardFSError) in
            try Self.plan(Self.small, LayoutOptions(ppSize: 3))
        }
    }

    @Test func refusesTrn1WhenKVHeadsTimesMultiplierIsNotTP() {
        // Hkv = 2, T = 4: m = 1 leaves T not dividing Hkv; m = 4 gives 8 != 4.
        for m in [1, 4] {
            expectRefusal(mentioning: ["--kv-size-multiplier", "use --kv-size-multiplier 2"]) { () throws(ShardFSError) in
                try Self.plan(Self.small, LayoutOptions(tpSize: 4, kvSizeMultiplier: m, qkvLinear: true, backend: .trn1))
            }
        }
        // Hkv = 8, T = 4, m = 2: a multiplier above 1 needs Hkv x m == T.
        expectRefusal(mentioning: ["--kv-size-multiplier", "use --kv-size-multiplier 1"]) { () throws(ShardFSError) in
            try Self.plan(Self.gqa, LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, backend: .trn1))
        }
    }

    @Test func refusesBadTrn2Combinations() {
        // Hkv = 2, T = 4, m = 1: T does not divide Hkv, and Hkv*m != T.
        expectRefusal(mentioning: ["--kv-size-multiplier"]) { () throws(ShardFSError) in
            try Self.plan(Self.small, LayoutOptions(tpSize: 4, kvSizeMultiplier: 1, qkvLinear: true, backend: .trn2))
        }
        // Hkv = 8, T = 4, m = 2: Hkv*m != T and m != 1.
        expectRefusal(mentioning: ["--kv-size-multiplier"]) { () throws(ShardFSError) in
            try Self.plan(Self.gqa, LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, backend: .trn2))
        }
    }

    @Test func refusesHeadsNotDivisibleByTPUnderQKVLinear() {
        // Hq = 6, Hkv = 2, T = 4, m = 2 (Hkv*m == T, but 4 does not divide 6).
        let c = ModelConfig(layers: 1, hidden: 24, heads: 6, kvHeads: 2, intermediate: 32, vocab: 64, dtype: .bfloat16)
        expectRefusal(mentioning: ["--tp-size", "num_attention_heads"]) { () throws(ShardFSError) in
            try Self.plan(c, LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true))
        }
    }

    @Test func refusesFuseWithoutQKVLinear() {
        expectRefusal(mentioning: ["--fuse-qkv"]) { () throws(ShardFSError) in
            try Self.plan(Self.small, LayoutOptions(tpSize: 2, fuseQKV: true))
        }
    }

    @Test func refusesExplicitHeadDimUnderQKVLinear() {
        let c = ModelConfig(layers: 1, hidden: 16, heads: 4, kvHeads: 2, intermediate: 32, vocab: 64, headDim: 8, dtype: .bfloat16)
        expectRefusal(mentioning: ["head_dim"]) { () throws(ShardFSError) in
            try Self.plan(c, LayoutOptions(tpSize: 2, kvSizeMultiplier: 1, qkvLinear: true))
        }
    }

    @Test func refusesMissingTensor() {
        var tensors = Self.llamaTensors(Self.small)
        tensors["model.layers.1.mlp.up_proj.weight"] = nil
        expectRefusal(mentioning: ["model.layers.1.mlp.up_proj.weight"]) { () throws(ShardFSError) in
            try LlamaWeights(config: Self.small, tensors: tensors)
        }
        var untied = Self.llamaTensors(Self.small)
        untied["lm_head.weight"] = nil
        expectRefusal(mentioning: ["lm_head.weight"]) { () throws(ShardFSError) in
            try LlamaWeights(config: Self.small, tensors: untied)
        }
    }

    @Test(arguments: ["model.layers.2.self_attn.q_proj.weight", "model.rotary_emb.inv_freq", "model.layers.0.mlp.extra.weight"])
    func refusesUnknownTensor(name: String) {
        var tensors = Self.llamaTensors(Self.small)
        tensors[name] = SourceTensor(name: name, dtype: .bfloat16, shape: [16], fileIndex: 0, offset: 0)
        expectRefusal(mentioning: [name]) { () throws(ShardFSError) in try LlamaWeights(config: Self.small, tensors: tensors) }
    }

    @Test func refusesBiasTensor() {
        var tensors = Self.llamaTensors(Self.small)
        let name = "model.layers.0.self_attn.q_proj.bias"
        tensors[name] = SourceTensor(name: name, dtype: .bfloat16, shape: [16], fileIndex: 0, offset: 0)
        expectRefusal(mentioning: [name, "bias"]) { () throws(ShardFSError) in try LlamaWeights(config: Self.small, tensors: tensors) }
    }

    @Test func refusesWrongShape() {
        var tensors = Self.llamaTensors(Self.small)
        let name = "model.layers.1.self_attn.k_proj.weight"
        tensors[name] = SourceTensor(name: name, dtype: .bfloat16, shape: [16, 16], fileIndex: 0, offset: 0)
        expectRefusal(mentioning: [name, "[16, 16]", "[8, 16]"]) { () throws(ShardFSError) in
            try LlamaWeights(config: Self.small, tensors: tensors)
        }
    }

    // MARK: config.json

    static func config(_ fields: [String: String]) -> [UInt8] {
        var all = [
            "architectures": "[\"LlamaForCausalLM\"]", "num_hidden_layers": "2", "hidden_size": "16",
            "num_attention_heads": "4", "num_key_value_heads": "2", "intermediate_size": "32", "vocab_size": "64",
            "torch_dtype": "\"bfloat16\"",
        ]
        for (k, v) in fields { all[k] = v }
        let body = all.keys.sorted().compactMap { k in all[k].flatMap { $0.isEmpty ? nil : "\"\(k)\": \($0)" } }
        return bytes("{" + body.joined(separator: ", ") + "}")
    }

    @Test func parsesConfig() throws {
        let c = try ModelConfig(json: Self.config([:]))
        #expect(c == ModelConfig(layers: 2, hidden: 16, heads: 4, kvHeads: 2, intermediate: 32, vocab: 64, dtype: .bfloat16))
        #expect(c.headDim == 4 && !c.headDimIsExplicit && !c.tieWordEmbeddings)
        let mistral = try ModelConfig(json: Self.config(["architectures": "[\"MistralForCausalLM\"]", "head_dim": "8",
                                                         "tie_word_embeddings": "true", "torch_dtype": "", "dtype": "\"float32\""]))
        #expect(mistral.architecture == "MistralForCausalLM")
        #expect(mistral.headDim == 8 && mistral.headDimIsExplicit)
        #expect(mistral.tieWordEmbeddings)
        #expect(mistral.dtype == .float32)
    }

    @Test func missingKVHeadsMeansMHA() throws {
        let c = try ModelConfig(json: Self.config(["num_key_value_heads": ""]))
        #expect(c.kvHeads == 4)
        #expect(c.kvHeads == c.heads)
    }

    @Test func refusesUnsupportedArchitecture() {
        expectRefusal(mentioning: ["architectures", "GPT2LMHeadModel"]) { () throws(ShardFSError) in
            try ModelConfig(json: Self.config(["architectures": "[\"GPT2LMHeadModel\"]"]))
        }
        expectRefusal(mentioning: ["architectures"]) { () throws(ShardFSError) in
            try ModelConfig(json: Self.config(["architectures": ""]))
        }
    }

    @Test(arguments: ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"])
    func refusesMissingField(field: String) {
        expectRefusal(mentioning: [field, "missing"]) { () throws(ShardFSError) in
            try ModelConfig(json: Self.config([field: ""]))
        }
    }

    @Test func refusesMalformedConfig() {
        expectRefusal(mentioning: ["hidden_size"]) { () throws(ShardFSError) in try ModelConfig(json: Self.config(["hidden_size": "\"16\""])) }
        expectRefusal(mentioning: ["hidden_size"]) { () throws(ShardFSError) in try ModelConfig(json: Self.config(["hidden_size": "0"])) }
        expectRefusal(mentioning: ["config.json"]) { () throws(ShardFSError) in try ModelConfig(json: bytes("{")) }
        expectRefusal(mentioning: ["torch_dtype"]) { () throws(ShardFSError) in try ModelConfig(json: Self.config(["torch_dtype": "\"int8\""])) }
    }
}

/// Each tensor's dtype in the target (`LayoutPlan.typedAsTheSource`): an NxD
/// tag's own dtypes per tensor unless `--dtype` says otherwise; a Hugging
/// Face model's one dtype. Sources are fabricated (no files: the plan reads
/// none): the small model of PlannerTests, its tensors bf16 but the norms
/// fp32, as NxD's bf16 runs keep them.
@Suite struct SourceDTypeTests {
    static let c = PlannerTests.small

    static func isNorm(_ name: String) -> Bool { name.hasSuffix("norm.weight") }

    /// A checkpoint of `c` whose tensors (and, as an NxD tag, model files)
    /// are bf16 with float32 norms.
    static func checkpoint(nxd: Bool, held: [String: DType]? = nil) -> Checkpoint {
        var tensors = PlannerTests.llamaTensors(c)
        for (name, t) in tensors where isNorm(name) {
            tensors[name] = SourceTensor(name: name, dtype: .float32, shape: t.shape, fileIndex: 0, offset: t.offset)
        }
        var config = c
        config.dtype = nil
        return Checkpoint(directory: "/nonexistent", config: config, configBytes: [], files: [], tensors: tensors,
                          sourceLayout: nxd ? LayoutOptions() : nil, fingerprints: [],
                          modelDTypes: nxd ? (held ?? tensors.mapValues(\.dtype)) : nil)
    }

    static func dtypes(_ plan: LayoutPlan) -> [String: DType] {
        var result: [String: DType] = [:]
        for file in plan.files { for t in file.tensors { result[t.key] = t.dtype } }
        for t in plan.huggingFaceTensors { result[t.key] = t.dtype }
        return result
    }

    @Test func anNxDTagKeepsEachTensorsDType() throws {
        let source = Self.checkpoint(nxd: true)
        for format in [CheckpointFormat.pt, .xser] {
            let plan = try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2, qkvLinear: true, format: format))
            let got = Self.dtypes(plan)
            // 2 layers x 2 norms + model.norm float32; the other 2 + 2 x 6 keys bf16.
            #expect(got.filter { $0.value == .float32 }.keys.sorted() == [
                "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"])
            #expect(got.filter { $0.value == .bfloat16 }.count == 14)
            #expect(plan.dtype == .bfloat16)
        }
        let hf = try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(format: .hf))
        // Hugging Face names: 21 tensors, the 5 norms float32.
        #expect(Self.dtypes(hf).filter { $0.value == .float32 }.count == 5 && Self.dtypes(hf).count == 21)
    }

    @Test func dtypeGivenTypesEveryTensor() throws {
        let source = Self.checkpoint(nxd: true)
        for d in [DType.bfloat16, .float32] {
            let plan = try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2, dtype: d))
            #expect(Set(Self.dtypes(plan).values) == [d])
        }
    }

    /// The model read from master weights (float32 tensors) takes the dtypes
    /// the model files name: bf16, norms float32.
    @Test func theModelFilesDTypesNotTheTensorsStorage() throws {
        var held: [String: DType] = [:]
        for (name, _) in PlannerTests.llamaTensors(Self.c) { held[name] = Self.isNorm(name) ? .float32 : .bfloat16 }
        let master = Checkpoint(directory: "/nonexistent", config: Self.c, configBytes: [], files: [],
                                tensors: PlannerTests.llamaTensors(Self.c, dtype: .float32), sourceLayout: LayoutOptions(),
                                fingerprints: [], modelDTypes: held)
        let got = Self.dtypes(try LayoutPlanner.plan(checkpoint: master, options: LayoutOptions(tpSize: 2)))
        #expect(got.filter { $0.value == .float32 }.count == 5 && got.filter { $0.value == .bfloat16 }.count == 14)
    }

    @Test func aHuggingFaceModelHasOneDType() throws {
        // config.json's torch_dtype (bf16 here) for every tensor, as NxD's converter.
        var tensors = PlannerTests.llamaTensors(Self.c)
        for (name, t) in tensors where Self.isNorm(name) {
            tensors[name] = SourceTensor(name: name, dtype: .float32, shape: t.shape, fileIndex: 0, offset: t.offset)
        }
        let hf = Checkpoint(directory: "/nonexistent", config: Self.c, configBytes: [], files: [], tensors: tensors,
                            sourceLayout: nil, fingerprints: [])
        #expect(Set(Self.dtypes(try LayoutPlanner.plan(checkpoint: hf, options: LayoutOptions(tpSize: 2))).values) == [.bfloat16])
    }

    @Test func aFusedTensorOfMixedDTypesAsksForOne() {
        var held = Self.checkpoint(nxd: true).modelDTypes!
        held["model.layers.0.self_attn.k_proj.weight"] = .float32
        let source = Self.checkpoint(nxd: true, held: held)
        expectRefusal(mentioning: ["--dtype", "model.layers.0.self_attn.qkv_proj.weight_qkv", "bfloat16 and float32"]) { () throws(ShardFSError) in
            try LayoutPlanner.plan(checkpoint: source, options: LayoutOptions(tpSize: 2, qkvLinear: true, fuseQKV: true))
        }
    }
}
