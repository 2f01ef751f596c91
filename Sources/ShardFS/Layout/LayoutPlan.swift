/// A rectangle of a source tensor, which is viewed as a matrix
/// [shape[0], product of the rest] (a 1-D tensor as one row).
public struct RowBlock: Equatable, Sendable {
    public let tensor: SourceTensor
    public let rows: Range<Int>
    public let columns: Range<Int>

    public init(tensor: SourceTensor, rows: Range<Int>, columns: Range<Int>) {
        self.tensor = tensor
        self.rows = rows
        self.columns = columns
    }

    /// The whole tensor.
    public init(whole tensor: SourceTensor) {
        let (rows, columns) = RowBlock.matrixShape(tensor.shape)
        self.init(tensor: tensor, rows: 0..<rows, columns: 0..<columns)
    }

    public static func matrixShape(_ shape: [Int]) -> (rows: Int, columns: Int) {
        shape.count <= 1 ? (1, shape.first ?? 1) : (shape[0], shape.dropFirst().reduce(1, *))
    }

    public var elementCount: Int { rows.count * columns.count }
}

/// One tensor of a rank file: its key, output dtype and shape, and the source
/// rectangles whose rows, stacked in order, make up its data.
public struct PlannedTensor: Equatable, Sendable {
    public let key: String
    public let dtype: DType
    public let shape: [Int]
    public let blocks: [RowBlock]

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.size }
}

/// One rank file: `model/dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt`.
public struct RankFile: Equatable, Sendable {
    public let tpRank: Int
    public let ppRank: Int
    public let tensors: [PlannedTensor]

    public var path: String { "model/" + RankFile.fileName(tp: tpRank, pp: ppRank) }

    public static func fileName(tp: Int, pp: Int) -> String { NxDFileName.rankFile(dp: 0, tp: tp, pp: pp) }
}

/// Every rank file of a layout, in the converter's order (tp-major).
public struct LayoutPlan: Sendable {
    public let options: LayoutOptions
    /// The output dtype actually used (the option, or the checkpoint's own).
    public let dtype: DType
    public let files: [RankFile]
    /// Layer numbers of each pipeline rank.
    public let layersOfPipelineRank: [[Int]]
    /// Things the user should know that do not stop the plan.
    public let warnings: [String]
    /// `--format hf`: every tensor under its Hugging Face name, whole, in the
    /// model's state-dict order (`files` is then empty).
    public var huggingFaceTensors: [PlannedTensor] = []
    /// `--format hf`: the `config.json` to write, verbatim.
    public var configBytes: [UInt8] = []
    /// Of a training tag with ZeRO-1 optimizer state, in pt or xser: the
    /// optimizer files, and the files carried as they are.
    public var optimizer: OptimizerPlan?
    /// `--format dcp`: the DCP folder's entries and files (`files` is then empty).
    public var dcp: DCPPlan?
}
