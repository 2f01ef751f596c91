import ShardFS

/// The planner, fed a fuzzed config.json and fuzzed layout flags, over the
/// tensors that config implies (built in memory: the planner reads headers
/// only, so no file is needed). Input: 6 bytes of flags, 1 byte choosing a
/// defect to put in the tensors, then the config.json text.
enum PlannerTarget {
    static func run(_ input: [UInt8]) {
        guard input.count >= 7 else { return }
        let options = decodeOptions(input)
        guard let config = try? ModelConfig(json: Array(input[7...])) else { return }
        let tensors = impliedTensors(config, defect: input[6])
        guard let weights = try? LlamaWeights(config: config, tensors: tensors),
              let plan = try? LayoutPlanner.plan(config: config, weights: weights, options: options) else { return }
        check(plan, config: config, options: options)
    }

    /// Flag values: mostly small (what users pass), sometimes extreme (what
    /// overflows): a byte at or above 0xF0 picks one of `extremes`.
    static let extremes = [0, -1, Int.max, Int.min, 1 << 31, 1 << 32, 1 << 62, (1 << 31) + 1,
                           65536, 65537, 4096, 1 << 20, 3 << 30, Int.max / 2, 1 << 16 - 1, 1 << 40]

    static func size(_ byte: UInt8) -> Int {
        byte >= 0xF0 ? extremes[Int(byte - 0xF0)] : Int(byte % 17)
    }

    static func decodeOptions(_ b: [UInt8]) -> LayoutOptions {
        let flags = b[4], dtypeChoice = Int(b[5] % 5)
        return LayoutOptions(
            tpSize: size(b[0]), ppSize: size(b[1]), virtualPPSize: size(b[2]), kvSizeMultiplier: size(b[3]),
            qkvLinear: flags & 1 != 0, fuseQKV: flags & 2 != 0, backend: flags & 4 != 0 ? .trn2 : .trn1,
            dtype: dtypeChoice == 0 ? nil : DType.allCases[dtypeChoice - 1])
    }

    /// The tensors `config` implies, laid end to end in one virtual file, for
    /// at most 8 layers (a config announcing more then lacks some, which must
    /// be refused). A tensor whose size overflows cannot be in a real header
    /// and is left out. `defect` (when not 0) removes, retypes or reshapes one.
    static func impliedTensors(_ c: ModelConfig, defect: UInt8) -> [String: SourceTensor] {
        var shapes: [(String, [Int])] = []
        func product(_ a: Int, _ b: Int) -> Int? {
            let (p, overflow) = a.multipliedReportingOverflow(by: b)
            return overflow ? nil : p
        }
        shapes.append(("model.embed_tokens.weight", [c.vocab, c.hidden]))
        for n in 0..<min(c.layers, 8) {
            let p = "model.layers.\(n)."
            if let q = product(c.heads, c.headDim) {
                shapes.append((p + "self_attn.q_proj.weight", [q, c.hidden]))
                shapes.append((p + "self_attn.o_proj.weight", [c.hidden, q]))
            }
            if let kv = product(c.kvHeads, c.headDim) {
                shapes.append((p + "self_attn.k_proj.weight", [kv, c.hidden]))
                shapes.append((p + "self_attn.v_proj.weight", [kv, c.hidden]))
            }
            shapes.append((p + "mlp.gate_proj.weight", [c.intermediate, c.hidden]))
            shapes.append((p + "mlp.up_proj.weight", [c.intermediate, c.hidden]))
            shapes.append((p + "mlp.down_proj.weight", [c.hidden, c.intermediate]))
            shapes.append((p + "input_layernorm.weight", [c.hidden]))
            shapes.append((p + "post_attention_layernorm.weight", [c.hidden]))
        }
        shapes.append(("model.norm.weight", [c.hidden]))
        if !c.tieWordEmbeddings { shapes.append(("lm_head.weight", [c.vocab, c.hidden])) }

        let victim = defect == 0 ? -1 : Int(defect >> 2) % shapes.count
        var tensors: [String: SourceTensor] = [:]
        var offset = 8
        for (i, (name, shape)) in shapes.enumerated() {
            var dtype = c.dtype ?? .bfloat16
            var shape = shape
            if i == victim {
                switch defect & 3 {
                case 0: continue
                case 1: dtype = dtype == .float32 ? .float16 : .float32
                case 2: shape = shape.map { $0 + 1 }
                default: shape = Array(shape.reversed())
                }
            }
            var bytes: Int? = dtype.size
            for d in shape { bytes = bytes.flatMap { product($0, d) } }
            guard let bytes, case let (end, overflow) = offset.addingReportingOverflow(bytes), !overflow else { continue }
            tensors[name] = SourceTensor(name: name, dtype: dtype, shape: shape, fileIndex: 0, offset: offset)
            offset = end
        }
        return tensors
    }

    /// An accepted plan names every rank file once, each tensor's blocks lie
    /// inside their source and add up to its shape, and every file's size is
    /// computed (the zip layout over all of it).
    static func check(_ plan: LayoutPlan, config c: ModelConfig, options o: LayoutOptions) {
        invariant(plan.files.count == o.tpSize * o.ppSize, "\(plan.files.count) files for tp \(o.tpSize) x pp \(o.ppSize)")
        invariant(Set(plan.files.map(\.path)).count == plan.files.count, "two rank files share a path")
        invariant(plan.layersOfPipelineRank.flatMap { $0 }.sorted() == Array(0..<c.layers), "layers not split exactly once")
        for file in plan.files {
            for tensor in file.tensors {
                var elements = 0
                for block in tensor.blocks {
                    let (rows, columns) = RowBlock.matrixShape(block.tensor.shape)
                    invariant(block.rows.lowerBound >= 0 && block.rows.upperBound <= rows
                              && block.columns.lowerBound >= 0 && block.columns.upperBound <= columns,
                              "\(tensor.key): block \(block.rows) x \(block.columns) outside \(block.tensor.name) \(block.tensor.shape)")
                    elements += block.elementCount
                }
                invariant(elements == tensor.elementCount, "\(tensor.key): blocks hold \(elements) elements, shape \(tensor.shape)")
            }
        }
        for (path, file) in plan.virtualFiles() {
            invariant(file.size > 0, "\(path) has size \(file.size)")
        }
    }
}
