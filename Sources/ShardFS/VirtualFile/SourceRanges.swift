/// A byte range of one source file.
public struct SourceRange: Equatable, Sendable, CustomStringConvertible {
    public let fileIndex: Int
    public let offset: Int
    public let count: Int

    public init(fileIndex: Int, offset: Int, count: Int) {
        self.fileIndex = fileIndex
        self.offset = offset
        self.count = count
    }

    public var end: Int { offset + count }
    public var description: String { "source \(fileIndex) [\(offset), \(end))" }
}

extension SliceExtent {
    /// Rows further apart than this are asked for one by one; closer rows as
    /// one span, gap included. Storage reads whole pages, and one large read
    /// beats thousands of small ones: at high TP a column cut takes a few
    /// hundred bytes of every row, so its span is read whole anyway (and
    /// sibling ranks need the rest of it).
    public static let spanGap = 128 << 10

    /// The source bytes that output bytes `range` of this slice come from
    /// (converted dtypes included), as few ranges as `spanGap` allows.
    public func sourceRanges(ofOutput range: Range<Int>) -> [SourceRange] {
        guard !range.isEmpty else { return [] }
        let inSize = sourceDType.size, outSize = outputDType.size
        let first = range.lowerBound / outSize * inSize
        let end = (range.upperBound + outSize - 1) / outSize * inSize
        let rowBytes = sourceRowBytes
        if rowCount == 1 { return [SourceRange(fileIndex: fileIndex, offset: offset + first, count: end - first)] }
        let firstRow = first / rowBytes, lastRow = (end - 1) / rowBytes
        let start = offset + firstRow * rowStride + first % rowBytes
        let stop = offset + lastRow * rowStride + (end - 1) % rowBytes + 1
        if rowStride - rowBytes < SliceExtent.spanGap || firstRow == lastRow {
            return [SourceRange(fileIndex: fileIndex, offset: start, count: stop - start)]
        }
        var ranges: [SourceRange] = []
        for row in firstRow...lastRow {
            let rowStart = row == firstRow ? start : offset + row * rowStride
            let rowEnd = row == lastRow ? stop : offset + row * rowStride + rowBytes
            ranges.append(SourceRange(fileIndex: fileIndex, offset: rowStart, count: rowEnd - rowStart))
        }
        return ranges
    }
}

extension StitchedExtent {
    /// The source bytes that output bytes `range` come from: per segment, the
    /// span of the rows `range` touches (a column-major segment's span covers
    /// its whole columns, which later rows need anyway).
    public func sourceRanges(ofOutput range: Range<Int>) -> [SourceRange] {
        guard !range.isEmpty else { return [] }
        let rowBytes = rowElements * outputDType.size
        let rows = range.lowerBound / rowBytes...(range.upperBound - 1) / rowBytes
        return segments.map { segment in
            let start = segment.offset + rows.lowerBound * segment.rowStride
            return SourceRange(fileIndex: segment.fileIndex, offset: start,
                               count: segment.end(rows: rows, elementSize: sourceDType.size) - start)
        }
    }
}

extension VirtualFile {
    /// The source bytes behind bytes `range` of this file, in file order,
    /// adjacent ranges of one source merged. Literal extents need none.
    public func sourceRanges(of range: Range<Int>) -> [SourceRange] {
        let file = self
        var ranges: [SourceRange] = []
        for piece in file.pieces(of: range) {
            let next: [SourceRange]
            switch extents[piece.extent] {
            case .literal, .zeros: continue
            case let .slice(slice): next = slice.sourceRanges(ofOutput: piece.range)
            case let .stitched(stitched): next = stitched.sourceRanges(ofOutput: piece.range)
            }
            for next in next {
                if let last = ranges.last, last.fileIndex == next.fileIndex, last.end == next.offset {
                    ranges[ranges.count - 1] = SourceRange(fileIndex: last.fileIndex, offset: last.offset, count: last.count + next.count)
                } else {
                    ranges.append(next)
                }
            }
        }
        return ranges
    }
}
