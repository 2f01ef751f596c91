/// The one place a planned rectangle of a source tensor becomes extents.
extension RowBlock {
    /// The block's bytes, row-major, converted to `outputDType`. A contiguous
    /// tensor gives one slice. A tensor in tiles is cut into bands of rows at
    /// every tile edge; a band inside one row-major tile is a slice, any
    /// other band (several tiles side by side, or a strided tile) is stitched.
    public func extents(outputDType: DType) -> [Extent] {
        let t = tensor
        guard !t.tiles.isEmpty else { return [.slice(SliceExtent(block: self, outputDType: outputDType))] }
        let size = t.dtype.size
        let hit = t.tiles.filter { $0.rows.overlaps(rows) && $0.columns.overlaps(columns) }
        var cuts = Set([rows.lowerBound, rows.upperBound])
        for tile in hit {
            for edge in [tile.rows.lowerBound, tile.rows.upperBound] where rows.contains(edge) { cuts.insert(edge) }
        }
        let edges = cuts.sorted()
        var result: [Extent] = []
        for (top, bottom) in zip(edges, edges.dropFirst()) {
            let band = hit.filter { $0.rows.lowerBound <= top && $0.rows.upperBound >= bottom }
                .sorted { $0.columns.lowerBound < $1.columns.lowerBound }
            var segments: [StitchedExtent.Segment] = []
            for tile in band {
                let left = max(columns.lowerBound, tile.columns.lowerBound), right = min(columns.upperBound, tile.columns.upperBound)
                guard left < right else { continue }
                segments.append(StitchedExtent.Segment(
                    fileIndex: tile.fileIndex,
                    offset: tile.offset + (top - tile.rows.lowerBound) * tile.rowStride + (left - tile.columns.lowerBound) * tile.elementStride,
                    rowStride: tile.rowStride, elementStride: tile.elementStride, elements: right - left))
            }
            assert(segments.reduce(0) { $0 + $1.elements } == columns.count, "tiles of \(t.name) leave a gap in rows \(top)..<\(bottom)")
            let rowCount = bottom - top
            if segments.count == 1, let only = segments.first, only.elementStride == size {
                if rowCount == 1 || only.rowStride == only.elements * size {
                    let elements = rowCount * only.elements
                    result.append(.slice(SliceExtent(fileIndex: only.fileIndex, offset: only.offset, rowCount: 1, rowElements: elements,
                                                     rowStride: elements * size, sourceDType: t.dtype, outputDType: outputDType)))
                } else {
                    result.append(.slice(SliceExtent(fileIndex: only.fileIndex, offset: only.offset, rowCount: rowCount, rowElements: only.elements,
                                                     rowStride: only.rowStride, sourceDType: t.dtype, outputDType: outputDType)))
                }
            } else {
                result.append(.stitched(StitchedExtent(rowCount: rowCount, segments: segments, sourceDType: t.dtype, outputDType: outputDType)))
            }
        }
        return result
    }
}
