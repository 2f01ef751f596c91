import CGather

/// Reading a `StitchedExtent`: its rows are copied from the sources' mappings,
/// a window of whole rows at a time, each segment's column band in one call.
extension ExtentReader {
    /// Packed bytes `range` of the extent's rows, in the source dtype. A range
    /// that cuts an element (a read at an odd offset) reads that element whole
    /// and keeps the bytes asked for.
    func readSource(_ extent: StitchedExtent, bytes range: Range<Int>, into out: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        let size = extent.sourceDType.size
        var position = range.lowerBound, written = 0
        // Bytes of the one element holding `position`, up to the end of `range`.
        func partial() throws(ShardFSError) {
            let element = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { element.deallocate() }
            let within = position % size, count = min(size - within, range.upperBound - position)
            try readElements(extent, position / size..<position / size + 1, into: element)
            (out.baseAddress! + written).copyMemory(from: element.baseAddress! + within, byteCount: count)
            position += count
            written += count
        }
        if position % size != 0 { try partial() }
        let wholeEnd = range.upperBound / size
        if position < range.upperBound, position / size < wholeEnd {
            let count = (wholeEnd - position / size) * size
            try readElements(extent, position / size..<wholeEnd, into: UnsafeMutableRawBufferPointer(rebasing: out[written..<written + count]))
            position += count
            written += count
        }
        if position < range.upperBound { try partial() }
    }

    /// Elements `elements` of the extent (row-major over its rows), packed.
    func readElements(_ extent: StitchedExtent, _ elements: Range<Int>, into out: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        let size = extent.sourceDType.size, width = extent.rowElements
        let windowRows = max(1, ExtentReader.gatherWindow / max(1, width * size))
        var element = elements.lowerBound
        var written = 0
        while element < elements.upperBound {
            let row = element / width, column = element % width
            if column == 0 && elements.upperBound - element >= width {
                let rows = min((elements.upperBound - element) / width, windowRows)
                try copy(extent, rows: row..<row + rows, columns: 0..<width, into: out.baseAddress! + written)
                element += rows * width
                written += rows * width * size
            } else {
                let stop = min(width, column + elements.upperBound - element)
                try copy(extent, rows: row..<row + 1, columns: column..<stop, into: out.baseAddress! + written)
                element += stop - column
                written += (stop - column) * size
            }
        }
    }

    /// Copies columns `columns` of rows `rows` into `out`, rows packed
    /// (`columns.count` elements each), segment by segment.
    private func copy(_ extent: StitchedExtent, rows: Range<Int>, columns: Range<Int>, into out: UnsafeMutableRawPointer) throws(ShardFSError) {
        let size = extent.sourceDType.size
        var base = 0
        for segment in extent.segments {
            defer { base += segment.elements }
            let lower = max(columns.lowerBound, base), upper = min(columns.upperBound, base + segment.elements)
            guard lower < upper else { continue }
            let file = try open(segment.fileIndex)
            guard segment.end(rows: 0...(extent.rowCount - 1), elementSize: size) <= file.size else {
                throw ShardFSError.badSource(file: file.name, reason: "is shorter than its tensors need (truncated while in use?)")
            }
            guard let mapping = file.mapping else {
                try copyWithoutMapping(segment, of: file, size: size, rows: rows, elements: (lower - base)..<(upper - base),
                                       into: out + (lower - columns.lowerBound) * size, rowBytes: columns.count * size)
                continue
            }
            let start = segment.offset + rows.lowerBound * segment.rowStride + (lower - base) * segment.elementStride
            let span = start..<(start + (rows.count - 1) * segment.rowStride + (upper - lower - 1) * segment.elementStride + size)
            file.prefetch(span)
            let status = shardfs_gather_strided(out + (lower - columns.lowerBound) * size, columns.count * size,
                                                mapping + start, segment.rowStride, segment.elementStride, size,
                                                upper - lower, rows.count)
            MappedPages.touched(span, of: mapping, size: file.size)
            guard status == 0 else {
                throw ShardFSError.badSource(file: file.name, reason: "became shorter while being read (truncated while in use?)")
            }
        }
    }

    /// A source that cannot be mapped (a file on a FUSE mount with direct_io,
    /// say) is read with pread: a row at a time from a row-major segment, a
    /// column at a time (then scattered) from a column-major one.
    private func copyWithoutMapping(_ segment: StitchedExtent.Segment, of file: OpenSourceFile, size: Int, rows: Range<Int>,
                                    elements: Range<Int>, into out: UnsafeMutableRawPointer, rowBytes: Int) throws(ShardFSError) {
        if segment.elementStride == size {
            for (index, row) in rows.enumerated() {
                let at = segment.offset + row * segment.rowStride + elements.lowerBound * size
                try file.read(at: at, into: UnsafeMutableRawBufferPointer(start: out + index * rowBytes, count: elements.count * size))
            }
            return
        }
        let column = UnsafeMutableRawBufferPointer.allocate(byteCount: rows.count * size, alignment: 8)
        defer { column.deallocate() }
        for (index, element) in elements.enumerated() {
            let first = segment.offset + rows.lowerBound * segment.rowStride + element * segment.elementStride
            if segment.rowStride == size {
                try file.read(at: first, into: column)
            } else {
                for row in 0..<rows.count {
                    try file.read(at: first + row * segment.rowStride, into: UnsafeMutableRawBufferPointer(rebasing: column[row * size..<(row + 1) * size]))
                }
            }
            for row in 0..<rows.count {
                (out + row * rowBytes + index * size).copyMemory(from: column.baseAddress! + row * size, byteCount: size)
            }
        }
    }
}
