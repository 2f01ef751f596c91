/// One tensor of a source checkpoint: where its bytes are and what they hold.
///
/// A Hugging Face tensor is contiguous and row-major at `offset` of one file.
/// A tensor of an NxD checkpoint exists only in pieces (each rank file holds
/// a cut of it, possibly strided): then `tiles` says which rectangle of the
/// tensor's matrix view each piece holds, and `fileIndex`/`offset` are
/// those of the first tile, for display only.
public struct SourceTensor: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Index into `Checkpoint.files`.
    public let fileIndex: Int
    /// Absolute byte offset of the tensor's first element in its file.
    public let offset: Int
    /// Empty for a contiguous tensor; else pieces covering the matrix view
    /// (`RowBlock.matrixShape`) exactly once.
    public let tiles: [TensorTile]

    public init(name: String, dtype: DType, shape: [Int], fileIndex: Int, offset: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.fileIndex = fileIndex
        self.offset = offset
        self.tiles = []
    }

    /// A tensor assembled from `tiles` (at least one).
    public init(name: String, dtype: DType, shape: [Int], tiles: [TensorTile]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.fileIndex = tiles.first?.fileIndex ?? 0
        self.offset = tiles.first?.offset ?? 0
        self.tiles = tiles
    }

    public var byteCount: Int { shape.reduce(dtype.size, *) }

    /// Its pieces; a contiguous tensor as one tile of the whole.
    public var tilesOrWhole: [TensorTile] {
        guard tiles.isEmpty else { return tiles }
        let (rows, columns) = RowBlock.matrixShape(shape)
        return [TensorTile(rows: 0..<rows, columns: 0..<columns, fileIndex: fileIndex, offset: offset,
                           rowStride: columns * dtype.size, elementStride: dtype.size)]
    }

    /// The source files holding the tensor's bytes.
    public var fileIndexes: [Int] { tiles.isEmpty ? [fileIndex] : tiles.map(\.fileIndex) }
}

/// A rectangle of a tensor's matrix view stored in one source file: element
/// (i, j) of the rectangle is at `offset + i * rowStride + j * elementStride`.
/// A column-major piece has `rowStride` of one element.
public struct TensorTile: Equatable, Sendable {
    public let rows: Range<Int>
    public let columns: Range<Int>
    public let fileIndex: Int
    public let offset: Int
    public let rowStride: Int
    public let elementStride: Int

    public init(rows: Range<Int>, columns: Range<Int>, fileIndex: Int, offset: Int, rowStride: Int, elementStride: Int) {
        self.rows = rows
        self.columns = columns
        self.fileIndex = fileIndex
        self.offset = offset
        self.rowStride = rowStride
        self.elementStride = elementStride
    }
}
