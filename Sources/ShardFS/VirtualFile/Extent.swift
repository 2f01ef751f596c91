/// Source bytes of a tensor rectangle, laid out as `rowCount` rows of
/// `rowElements` elements, `rowStride` bytes apart in the source file, and
/// converted from `sourceDType` to `outputDType` on the way out.
public struct SliceExtent: Equatable, Sendable {
    public let fileIndex: Int
    /// Absolute offset in the source file of the first element of the first row.
    public let offset: Int
    public let rowCount: Int
    public let rowElements: Int
    public let rowStride: Int
    public let sourceDType: DType
    public let outputDType: DType

    public init(fileIndex: Int, offset: Int, rowCount: Int, rowElements: Int, rowStride: Int,
                sourceDType: DType, outputDType: DType) {
        self.fileIndex = fileIndex
        self.offset = offset
        self.rowCount = rowCount
        self.rowElements = rowElements
        self.rowStride = rowStride
        self.sourceDType = sourceDType
        self.outputDType = outputDType
    }

    /// The extent of one block of a planned tensor. A block spanning whole
    /// rows is one contiguous run, described as a single row.
    public init(block: RowBlock, outputDType: DType) {
        let t = block.tensor
        let width = RowBlock.matrixShape(t.shape).columns
        let first = t.offset + (block.rows.lowerBound * width + block.columns.lowerBound) * t.dtype.size
        if block.columns.count == width || block.rows.count == 1 {
            self.init(fileIndex: t.fileIndex, offset: first, rowCount: 1, rowElements: block.elementCount,
                      rowStride: block.elementCount * t.dtype.size, sourceDType: t.dtype, outputDType: outputDType)
        } else {
            self.init(fileIndex: t.fileIndex, offset: first, rowCount: block.rows.count, rowElements: block.columns.count,
                      rowStride: width * t.dtype.size, sourceDType: t.dtype, outputDType: outputDType)
        }
    }

    public var elementCount: Int { rowCount * rowElements }
    /// Bytes this extent contributes to the virtual file.
    public var byteCount: Int { elementCount * outputDType.size }
    /// Source bytes of one row.
    public var sourceRowBytes: Int { rowElements * sourceDType.size }
}

/// A piece of a virtual file: bytes known up front (zip framing, pickle), or
/// a slice of source tensor data.
public enum Extent: Equatable, Sendable {
    case literal([UInt8])
    case slice(SliceExtent)

    public var byteCount: Int {
        switch self {
        case let .literal(bytes): return bytes.count
        case let .slice(s): return s.byteCount
        }
    }
}
