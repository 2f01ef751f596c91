/// A DCP tensor's chunks as the pieces of a `SourceTensor`: checked to
/// tile the tensor exactly (no overlap, no hole: `.metadata` is trusted for
/// nothing), then each chunk, stored contiguous, a tile of the tensor's
/// matrix view (`RowBlock.matrixShape`: a 1-D tensor is one row).
enum DCPChunks {
    /// A chunk, found: its box and where its first element is.
    struct Located: Sendable {
        let offsets: [Int]
        let sizes: [Int]
        let file: Int
        let offset: Int
    }

    /// Refuses chunks of tensor `fqn` (of `size`, 1 or 2 dimensions) that
    /// overlap or leave part of it in no chunk, naming the rows (the
    /// elements of a 1-D tensor).
    static func checkCover(_ chunks: [DCPMetadata.Chunk], size: [Int], fqn: String) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: DCPFolder.metadataName, reason: "tensor \(fqn): \(reason)") }
        // As [rows, columns] boxes; empty chunks hold nothing.
        let boxes = chunks.enumerated().map { (n, c) in (n: n, box: matrixBox(c, rank: size.count)) }
            .filter { !$0.box.rows.isEmpty && !$0.box.columns.isEmpty }
            .sorted { ($0.box.rows.lowerBound, $0.box.columns.lowerBound) < ($1.box.rows.lowerBound, $1.box.columns.lowerBound) }
        let what = size.count == 1 ? "elements" : "rows"
        func span(_ box: (rows: Range<Int>, columns: Range<Int>)) -> String {
            size.count == 1 ? "elements \(box.columns)" : "rows \(box.rows)" + (box.columns.count == (size.count == 2 ? size[1] : 1) ? "" : ", columns \(box.columns)")
        }
        // Sorted so, boxes of one band of rows (a 1-D tensor's, or column
        // chunks) overlap only a neighbour; row chunks only the boxes that
        // start within their rows.
        let oneBand = boxes.allSatisfy { $0.box.rows == boxes[0].box.rows }
        for i in boxes.indices {
            var j = i + 1
            while j < boxes.count, boxes[j].box.rows.lowerBound < boxes[i].box.rows.upperBound, !oneBand || j == i + 1 {
                let a = boxes[i], b = boxes[j]
                if a.box.columns.overlaps(b.box.columns) {
                    let rows = a.box.rows.clamped(to: b.box.rows), columns = a.box.columns.clamped(to: b.box.columns)
                    throw bad("chunks \(min(a.n, b.n)) (\(span(a.box))) and \(max(a.n, b.n)) (\(span(b.box))) overlap in \(span((rows, columns)))")
                }
                j += 1
            }
        }
        // Without overlap, the chunks tile the tensor when they hold all its
        // elements; else the first band of rows not wholly held is named.
        let (rows, columns) = size.count == 2 ? (size[0], size[1]) : (1, size.first ?? 1)
        var held = 0, overflow = false
        for b in boxes where !overflow {
            let (volume, o1) = b.box.rows.count.multipliedReportingOverflow(by: b.box.columns.count)
            let (sum, o2) = held.addingReportingOverflow(volume)
            (held, overflow) = (sum, o1 || o2)
        }
        let (total, o3) = rows.multipliedReportingOverflow(by: columns)
        if !overflow, !o3, held == total { return }
        var edges = Set([0, rows])
        for b in boxes { edges.insert(b.box.rows.lowerBound); edges.insert(b.box.rows.upperBound) }
        let sorted = edges.sorted()
        for (top, bottom) in zip(sorted, sorted.dropFirst()) {
            let held = boxes.filter { $0.box.rows.lowerBound <= top && $0.box.rows.upperBound >= bottom }
                .map(\.box.columns).sorted { $0.lowerBound < $1.lowerBound }
            var next = 0
            for range in held + [columns..<columns] {
                if range.lowerBound > next {
                    let hole = (rows: top..<bottom, columns: next..<range.lowerBound)
                    throw bad("\(size.count == 1 ? "elements \(hole.columns)" : span(hole)) are in no chunk (\(what) of the tensor's size \(size) must each be in exactly one)")
                }
                next = max(next, range.upperBound)
            }
        }
    }

    /// A chunk of a tensor of `rank` dimensions as a box of its matrix view.
    static func matrixBox(_ c: DCPMetadata.Chunk, rank: Int) -> (rows: Range<Int>, columns: Range<Int>) {
        switch rank {
        case 0: return (0..<1, 0..<1)
        case 1: return (0..<1, c.offsets[0]..<c.offsets[0] + c.sizes[0])
        default: return (c.offsets[0]..<c.offsets[0] + c.sizes[0], c.offsets[1]..<c.offsets[1] + c.sizes[1])
        }
    }

    /// The tensor `name` of `shape` (1 or 2 dimensions) from its chunks,
    /// which tile it: one contiguous tensor when one chunk holds it all,
    /// else a tile per chunk.
    static func tensor(name: String, dtype: DType, shape: [Int], chunks: [Located]) -> SourceTensor {
        let held = chunks.filter { !$0.sizes.contains(0) }
        if held.count == 1, let only = held.first, only.sizes == shape {
            return SourceTensor(name: name, dtype: dtype, shape: shape, fileIndex: only.file, offset: only.offset)
        }
        let tiles = held.map { c in
            let box = matrixBox(DCPMetadata.Chunk(offsets: c.offsets, sizes: c.sizes), rank: shape.count)
            return TensorTile(rows: box.rows, columns: box.columns, fileIndex: c.file, offset: c.offset,
                              rowStride: box.columns.count * dtype.size, elementStride: dtype.size)
        }
        return SourceTensor(name: name, dtype: dtype, shape: shape, tiles: tiles)
    }
}

extension SourceTensor {
    /// This TorchTitan wq or wk (RoPE on interleaved pairs of rows) in
    /// Hugging Face's order (RoPE on the two halves of each head), as the
    /// adapter's `to_hf` (`_permute`) gives it: row `h*d + j*d/2 + i` of the
    /// result is row `h*d + 2i + j` of this tensor (d the head dim, heads
    /// `heads`). The inverse of `ropeInterleaved`, and a view like it: each
    /// half-head of the result is every other row of a source tile, a tile
    /// of twice the source's row stride; nothing is copied.
    public func rotateHalf(heads: Int) -> SourceTensor {
        let rows = RowBlock.matrixShape(shape).rows
        let d = rows / heads, half = d / 2
        let tiles = self.tilesOrWhole
        /// ceil(x / 2) for any sign.
        func halfUp(_ x: Int) -> Int { x <= 0 ? -((-x) / 2) : (x + 1) / 2 }
        var result: [TensorTile] = []
        for tile in tiles where !tile.rows.isEmpty {
            for h in tile.rows.lowerBound / d...(tile.rows.upperBound - 1) / d {
                for j in 0..<2 {
                    // Source rows h*d + j + 2i, for the i that land in the tile.
                    let first = h * d + j
                    let low = max(0, halfUp(tile.rows.lowerBound - first)), high = min(half, halfUp(tile.rows.upperBound - first))
                    guard low < high else { continue }
                    let row = h * d + j * half + low
                    result.append(TensorTile(
                        rows: row..<row + (high - low), columns: tile.columns, fileIndex: tile.fileIndex,
                        offset: tile.offset + (first + 2 * low - tile.rows.lowerBound) * tile.rowStride,
                        rowStride: 2 * tile.rowStride, elementStride: tile.elementStride))
                }
            }
        }
        return SourceTensor(name: name, dtype: dtype, shape: shape, tiles: result)
    }
}
