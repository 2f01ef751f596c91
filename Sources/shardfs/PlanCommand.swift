import ArgumentParser
import Foundation
import ShardFS

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Print every rank file of a layout: size, tensors, and where each comes from.",
        discussion: """
            Reads headers only, never tensor data: check a layout here before a job.

              shardfs plan /fsx/ubuntu/Meta-Llama-3-70B \\
                  --tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32

            Over a trained NxD checkpoint, it shows the layout read from the rank files
            and where every Hugging Face tensor comes from:

              shardfs plan /fsx/ubuntu/llama3_70B/step_1000 --config /fsx/ubuntu/Meta-Llama-3-70B --format hf
            """
    )

    @Argument(help: "The source: a Hugging Face model directory (config.json and *.safetensors), or an NxD checkpoint tag (TAG/model/ of rank files; give --config), whose ZeRO-1 optimizer state (TAG/optim/) is planned too unless --weights-only.")
    var source: String

    @OptionGroup(title: "Source")
    var sourceFlags: SourceFlags

    @OptionGroup(title: "Layout")
    var layout: LayoutFlags

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let (checkpoint, plan) = try reportingErrors { () throws(ShardFSError) in try openAndPlan(source, sourceFlags, layout, announceSource: false) }
        let report = PlanReport(checkpoint: checkpoint, plan: plan)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes]
            Console.out(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            Console.out(report.text)
        }
    }
}

/// What `plan` prints, shaped for JSON and for people.
struct PlanReport: Encodable {
    struct Source: Encodable {
        let tensor: String
        let file: String
        let rows: [Int]
        let columns: [Int]
        /// True when the block is the whole source tensor.
        let whole: Bool
        /// The source tensor is 1-D (a norm): `rows` is then always [0, 1],
        /// and the text shows the range of `columns` alone.
        var oneDimensional = false

        private enum CodingKeys: String, CodingKey { case tensor, file, rows, columns, whole }
    }
    /// A file of the xser format besides the rank file itself.
    struct Companion: Encodable {
        let path: String
        let size: Int
    }
    struct Tensor: Encodable {
        let key: String
        let dtype: String
        let shape: [Int]
        let sources: [Source]
        /// xser: the file holding this tensor alone (`P.tensors/tensor_<tid>.pt`).
        let file: Companion?
    }
    struct File: Encodable {
        let path: String
        let tpRank: Int
        let ppRank: Int
        /// Size of the file at `path` (in xser, the dict of references).
        let size: Int
        /// xser: `P.info.pt`.
        let info: Companion?
        let tensors: [Tensor]
    }
    struct Layout: Encodable {
        let tpSize, ppSize, virtualPPSize, kvSizeMultiplier: Int
        let qkvLinear, fuseQKV: Bool
        let hwBackend, dtype: String
        let layersOfPPRank: [[Int]]
    }

    let model: String
    /// An NxD checkpoint source: the layout its files were written in.
    let sourceLayout: Layout?
    let layout: Layout
    /// "pt" or "xser" (`--format`).
    let format: String
    /// Every file of the format: in xser, each rank file, its .info.pt and its tensor files.
    let fileCount: Int
    let totalSize: Int
    let files: [File]
    /// `--format hf`: every tensor in state-dict order, and the files written.
    let huggingFaceTensors: [Tensor]
    let huggingFaceFiles: [Companion]
    /// A training tag's ZeRO-1 optimizer state, as inferred and as planned.
    let optimizer: OptimizerReport?
    /// `--format dcp`: the folder's files and entries.
    let dcp: DCPReport?

    /// Where a block's bytes are: the source tensor's file, or for a tensor
    /// in pieces, each piece's file and the part of the block it holds.
    static func sources(_ b: RowBlock, files: [SourceFile]) -> [Source] {
        let whole = b == RowBlock(whole: b.tensor)
        let oneDimensional = b.tensor.shape.count == 1
        guard !b.tensor.tiles.isEmpty else {
            return [Source(tensor: b.tensor.name, file: files[b.tensor.fileIndex].name,
                           rows: [b.rows.lowerBound, b.rows.upperBound], columns: [b.columns.lowerBound, b.columns.upperBound], whole: whole,
                           oneDimensional: oneDimensional)]
        }
        return b.tensor.tiles.compactMap { tile in
            let rows = tile.rows.clamped(to: b.rows), columns = tile.columns.clamped(to: b.columns)
            guard !rows.isEmpty, !columns.isEmpty else { return nil }
            return Source(tensor: b.tensor.name, file: files[tile.fileIndex].name, rows: [rows.lowerBound, rows.upperBound],
                          columns: [columns.lowerBound, columns.upperBound], whole: false, oneDimensional: oneDimensional)
        }
    }

    static func layout(_ o: LayoutOptions, dtype: String, layers: [[Int]]) -> Layout {
        Layout(tpSize: o.tpSize, ppSize: o.ppSize, virtualPPSize: o.virtualPPSize, kvSizeMultiplier: o.kvSizeMultiplier,
               qkvLinear: o.qkvLinear, fuseQKV: o.fuseQKV, hwBackend: o.backend.rawValue, dtype: dtype, layersOfPPRank: layers)
    }

    init(checkpoint: Checkpoint, plan: LayoutPlan) {
        let o = plan.options
        let c = checkpoint.config
        model = "\(c.architecture): \(c.layers) layers, hidden \(c.hidden), \(c.heads) heads, \(c.kvHeads) KV heads, intermediate \(c.intermediate), vocab \(c.vocab)\(c.tieWordEmbeddings ? ", tied embeddings" : "")"
        layout = PlanReport.layout(o, dtype: plan.dtype.rawValue, layers: plan.layersOfPipelineRank)
        sourceLayout = checkpoint.sourceLayout.map { source in
            PlanReport.layout(source, dtype: source.dtype?.rawValue ?? "mixed",
                              layers: (try? LayoutPlanner.pipelineLayers(layers: c.layers, options: source)) ?? [])
        }
        // Sizes come from the very files convert writes and mount serves.
        // Each found by its path in the plan's compact list: a table of every
        // path's size was 350,000 entries for a 70B-count training tag in xser.
        let outputs = plan.virtualFiles()
        let sizeOf: @Sendable (String) -> Int? = { outputs.file(at: $0)?.size }
        let xser = o.format == .xser
        func companion(_ path: String) -> Companion? { xser ? Companion(path: path, size: sizeOf(path) ?? 0) : nil }
        format = o.format.rawValue
        fileCount = outputs.count
        totalSize = outputs.totalSize
        files = plan.files.map { file in
            File(path: file.path, tpRank: file.tpRank, ppRank: file.ppRank, size: sizeOf(file.path) ?? 0,
                 info: companion(RankFile.xserInfoPath(file.path)),
                 tensors: file.tensors.enumerated().map { tid, t in
                     Tensor(key: t.key, dtype: t.dtype.rawValue, shape: t.shape,
                            sources: t.blocks.flatMap { PlanReport.sources($0, files: checkpoint.files) },
                            file: companion(RankFile.xserTensorPath(file.path, tid: tid)))
                 })
        }
        huggingFaceTensors = plan.huggingFaceTensors.map { t in
            Tensor(key: t.key, dtype: t.dtype.rawValue, shape: t.shape,
                   sources: t.blocks.flatMap { PlanReport.sources($0, files: checkpoint.files) }, file: nil)
        }
        huggingFaceFiles = o.format == .hf ? outputs.map { Companion(path: $0.path, size: $0.file.size) } : []
        optimizer = plan.optimizer.map { OptimizerReport($0, sizeOf: sizeOf) }
        dcp = plan.dcp.map { DCPReport($0, sizeOf: sizeOf) }
    }

    static func describe(_ l: Layout) -> String {
        "tp \(l.tpSize), pp \(l.ppSize), virtual pp \(l.virtualPPSize), kv multiplier \(l.kvSizeMultiplier)"
            + (l.qkvLinear ? ", qkv-linear" : "") + (l.fuseQKV ? ", fuse-qkv" : "") + ", \(l.hwBackend), \(l.dtype)"
    }

    /// Each source as `tensor (file)` when whole, else with its range:
    /// `[r0:r1, c0:c1]` of a matrix (the columns of its rows, as a matrix
    /// [dim 0, the rest]), `[c0:c1]` of a 1-D tensor.
    static func describe(_ sources: [Source]) -> String {
        sources.map { s in
            if s.whole { return "\(s.tensor) (\(s.file))" }
            let range = s.oneDimensional ? "\(s.columns[0]):\(s.columns[1])" : "\(s.rows[0]):\(s.rows[1]), \(s.columns[0]):\(s.columns[1])"
            return "\(s.tensor)[\(range)] (\(s.file))"
        }.joined(separator: " + ")
    }

    var text: String {
        var lines = [model]
        if let source = sourceLayout {
            lines.append("source: NxD checkpoint, layout \(PlanReport.describe(source))")
        }
        if let dcp {
            return (lines + dcp.lines).joined(separator: "\n")
        }
        if format == "hf" {
            lines.append("Hugging Face checkpoint: \(huggingFaceFiles.count) files, \(Units.bytes(totalSize)) in all")
            for file in huggingFaceFiles { lines.append("  \(file.path)  \(file.size) bytes (\(Units.bytes(file.size)))") }
            lines.append("")
            for t in huggingFaceTensors {
                lines.append("  \(t.key)  \(t.dtype) [\(t.shape.map(String.init).joined(separator: ", "))]")
                // A tensor in pieces: one line per piece, so a 70B plan stays readable.
                for s in t.sources {
                    lines.append("      <- " + PlanReport.describe([s]))
                }
            }
            return lines.joined(separator: "\n")
        }
        lines += [
                     "layout: " + PlanReport.describe(layout) + (format == "pt" ? "" : ", \(format)"),
                     format == "pt" ? "\(fileCount) files, \(Units.bytes(totalSize)) in all"
                        : "\(fileCount) files (\(files.count) rank files with their .info.pt and tensor files), \(Units.bytes(totalSize)) in all"]
        for (pp, layers) in layout.layersOfPPRank.enumerated() {
            lines.append("  pp rank \(pp): layers \(layers.map(String.init).joined(separator: " "))")
        }
        for file in files {
            lines.append("")
            lines.append("\(file.path)  \(file.size) bytes (\(Units.bytes(file.size)))")
            if let info = file.info { lines.append("\(info.path)  \(info.size) bytes (\(Units.bytes(info.size)))") }
            for t in file.tensors {
                let from = PlanReport.describe(t.sources)
                let into = t.file.map { "  -> \($0.path.split(separator: "/").suffix(2).joined(separator: "/")) \($0.size) bytes" } ?? ""
                lines.append("  \(t.key)  \(t.dtype) [\(t.shape.map(String.init).joined(separator: ", "))]  <- \(from)\(into)")
            }
        }
        if let optimizer { lines += [""] + optimizer.lines }
        return lines.joined(separator: "\n")
    }
}
