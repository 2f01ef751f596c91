/// A tensor of a file being checked, seen as a loader sees it: row-major,
/// whatever its strides (NxD's converter stores o_proj column-major; a
/// trainer stores q, k, v as views of one storage). Reading it gives the
/// bytes of `tensor.contiguous()`.
struct FoundTensor {
    let located: LocatedTensor
    /// The tensor as one tile of the checked file (index 0 of its reader).
    let source: SourceTensor

    /// nil when the strides cannot be seen as a matrix of rows (a view over
    /// 3 or more dimensions that is not contiguous past the first): Llama
    /// weights have 1 or 2.
    init?(_ located: LocatedTensor) {
        self.located = located
        let size = located.dtype.size
        let shape = located.shape, strides = located.strides
        guard strides.count == shape.count else { return nil }
        let (rows, columns) = RowBlock.matrixShape(shape)
        let rowStride: Int, elementStride: Int
        switch shape.count {
        case 0:
            (rowStride, elementStride) = (size, size)
        case 1:
            (rowStride, elementStride) = (shape[0] * strides[0] * size, strides[0] * size)
        default:
            // Dims 1... must collapse into one of stride strides.last.
            for dim in 1..<shape.count - 1 where shape[dim + 1] > 1 && strides[dim] != strides[dim + 1] * shape[dim + 1] {
                return nil
            }
            (rowStride, elementStride) = (strides[0] * size, strides[shape.count - 1] * size)
        }
        source = SourceTensor(name: located.key, dtype: located.dtype, shape: shape, tiles: [
            TensorTile(rows: 0..<rows, columns: 0..<columns, fileIndex: 0, offset: located.offset,
                       rowStride: rowStride, elementStride: elementStride),
        ])
    }

    var byteCount: Int { source.byteCount }

    /// Rows `rows` (of the matrix view), row-major, as extents of the checked file.
    func extents(rows: Range<Int>? = nil) -> [Extent] {
        guard byteCount > 0 else { return [] }
        let whole = RowBlock(whole: source)
        let block = rows.map { RowBlock(tensor: source, rows: $0, columns: whole.columns) } ?? whole
        return block.extents(outputDType: located.dtype)
    }

    /// True when the row-major bytes are exactly the storage record, in
    /// order: the CRC of what is compared is then the record's.
    var isWholeRecordInOrder: Bool {
        guard located.offset == located.storage.dataOffset, byteCount == located.storage.size else { return false }
        var expected = 1
        for (size, stride) in zip(located.shape, located.strides).reversed() {
            if size != 1 && stride != expected { return false }
            expected *= size
        }
        return true
    }
}
