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

/// Rows stitched side by side from several source pieces: row i is row i of
/// each segment in turn, converted from `sourceDType` to `outputDType`. It is
/// how a rectangle of a tensor that is stored in pieces reads (a Hugging Face
/// o_proj assembled from the T column cuts of NxD rank files); a segment may
/// be strided, as a column-major piece is (element j of row i at
/// `offset + i * rowStride + j * elementStride`).
public struct StitchedExtent: Equatable, Sendable {
    public struct Segment: Equatable, Sendable {
        public let fileIndex: Int
        /// Absolute offset in the source file of the segment's first element.
        public let offset: Int
        public let rowStride: Int
        public let elementStride: Int
        public let elements: Int

        public init(fileIndex: Int, offset: Int, rowStride: Int, elementStride: Int, elements: Int) {
            self.fileIndex = fileIndex
            self.offset = offset
            self.rowStride = rowStride
            self.elementStride = elementStride
            self.elements = elements
        }

        /// One past the last source byte of rows `rows` (strides are never negative).
        func end(rows: ClosedRange<Int>, elementSize: Int) -> Int {
            offset + rows.upperBound * rowStride + (elements - 1) * elementStride + elementSize
        }
    }

    public let rowCount: Int
    public let segments: [Segment]
    public let sourceDType: DType
    public let outputDType: DType

    public init(rowCount: Int, segments: [Segment], sourceDType: DType, outputDType: DType) {
        self.rowCount = rowCount
        self.segments = segments
        self.sourceDType = sourceDType
        self.outputDType = outputDType
    }

    /// Elements of one output row: the segments' widths added.
    public var rowElements: Int { segments.reduce(0) { $0 + $1.elements } }
    public var elementCount: Int { rowCount * rowElements }
    public var byteCount: Int { elementCount * outputDType.size }
}

/// A piece of a virtual file: bytes known up front (zip framing, pickle), a
/// run of zero bytes (the padding ZeRO-1 adds to an optimizer shard), a
/// slice of source tensor data, or rows stitched from several slices.
public enum Extent: Equatable, Sendable {
    case literal([UInt8])
    /// `count` zero bytes, never held in memory whole.
    case zeros(Int)
    case slice(SliceExtent)
    case stitched(StitchedExtent)

    public var byteCount: Int {
        switch self {
        case let .literal(bytes): return bytes.count
        case let .zeros(count): return count
        case let .slice(s): return s.byteCount
        case let .stitched(s): return s.byteCount
        }
    }

    /// The source files this extent reads.
    public var sourceFileIndexes: [Int] {
        switch self {
        case .literal, .zeros: return []
        case let .slice(s): return [s.fileIndex]
        case let .stitched(s): return s.segments.map(\.fileIndex)
        }
    }
}
