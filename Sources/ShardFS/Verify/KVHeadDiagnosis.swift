/// Which KV heads the K and V rows of a differing tensor hold: each head
/// block (head_dim rows) of the file compared with every KV head of the
/// source, so that a report can say "K rows hold KV head 1, the layout
/// (trn2, kv multiplier 2) wants KV head 0" instead of a bare element. It is
/// how NxD's converter goes wrong on trn2 (it tiles K/V heads where the
/// runtime groups them): such files load, run, and train on wrong heads.
enum KVHeadDiagnosis {
    /// One finding per K/V head block of `planned` (empty when the layout has
    /// no qkv_linear head structure, or the rows cannot be read).
    static func findings(_ planned: PlannedTensor, found: FoundTensor, reader: ExtentReader,
                         context: CheckContext) -> [KVHeadFinding] {
        let d = context.config.headDim
        guard context.layout.qkvLinear, planned.shape.count == 2, d > 0 else { return [] }
        var findings: [KVHeadFinding] = []
        var row = 0
        for block in planned.blocks {
            defer { row += block.rows.count }
            let name = block.tensor.name
            let projection = name.hasSuffix("self_attn.k_proj.weight") ? "K" : name.hasSuffix("self_attn.v_proj.weight") ? "V" : nil
            guard let projection, block.rows.lowerBound % d == 0, block.rows.count % d == 0 else { continue }
            for first in stride(from: block.rows.lowerBound, to: block.rows.upperBound, by: d) {
                let wanted = first / d
                let at = row + first - block.rows.lowerBound
                let rows = VirtualFile(extents: found.extents(rows: at..<at + d))
                func holds(_ head: Int) -> Bool {
                    let source = RowBlock(tensor: block.tensor, rows: head * d..<(head + 1) * d, columns: block.columns)
                    var noCRC: RecordCRC?
                    do {
                        return try StreamComparison.firstDifference(
                            byteCount: rows.size, dtype: planned.dtype, buffers: context.buffers,
                            expected: CheckContext.stream(VirtualFile(extents: source.extents(outputDType: planned.dtype)), context.expectedReader),
                            found: CheckContext.stream(rows, reader), crc: &noCRC) == nil
                    } catch {
                        return false
                    }
                }
                let heads = RowBlock.matrixShape(block.tensor.shape).rows / d
                let holding = holds(wanted) ? wanted : (0..<heads).first { $0 != wanted && holds($0) }
                findings.append(KVHeadFinding(projection: projection, row: at, wanted: wanted, found: holding))
            }
        }
        return findings
    }

    /// "K rows hold KV head 1, the layout (trn2, kv multiplier 2) wants KV
    /// head 0; V rows ...", or nil when every head block holds its head.
    static func message(_ findings: [KVHeadFinding], layout: LayoutOptions, config: ModelConfig, tpRank: Int) -> String? {
        guard findings.contains(where: { $0.found != $0.wanted }) else { return nil }
        let described = "\(layout.backend.rawValue), kv multiplier \(layout.kvSizeMultiplier)"
        func heads(_ findings: [KVHeadFinding], _ value: (KVHeadFinding) -> Int?) -> String {
            (findings.count == 1 ? "KV head " : "KV heads ") + findings.map { value($0).map(String.init) ?? "none of the source's" }.joined(separator: ", ")
        }
        let k = findings.filter { $0.projection == "K" }, v = findings.filter { $0.projection == "V" }
        var groups: [(String, [KVHeadFinding])] = []
        if k.map(\.found) == v.map(\.found) && k.map(\.wanted) == v.map(\.wanted) {
            groups = [("K and V", k)]
        } else {
            groups = [("K", k), ("V", v)]
        }
        var parts: [String] = []
        for (name, mine) in groups where mine.contains(where: { $0.found != $0.wanted }) {
            parts.append("\(name) rows hold \(heads(mine, \.found)), the layout (\(described)) wants \(heads(mine, \.wanted))")
        }
        var text = parts.joined(separator: "; ")
        if isTiledAsTrn1(findings, layout: layout, config: config, tpRank: tpRank) {
            text += " (tiled as on trn1, as NxD's converter writes trn2 files; trn2 wants each KV head repeated in a row)"
        }
        return text
    }

    /// True when the layout is trn2 with replicated heads and every K/V head
    /// block holds what trn1's tiling would put there.
    static func isTiledAsTrn1(_ findings: [KVHeadFinding], layout: LayoutOptions, config: ModelConfig, tpRank: Int) -> Bool {
        guard layout.backend == .trn2, layout.kvSizeMultiplier > 1 else { return false }
        var trn1 = layout
        trn1.backend = .trn1
        guard let cutter = try? TensorCutter(config: config, options: trn1) else { return false }
        let sourceRows = cutter.kvRowSources(tpRank)
        let d = config.headDim
        for projection in ["K", "V"] {
            let mine = findings.filter { $0.projection == projection }
            for (index, finding) in mine.enumerated() {
                guard index * d < sourceRows.count, finding.found == sourceRows[index * d] / d else { return false }
            }
        }
        return !findings.isEmpty
    }
}
