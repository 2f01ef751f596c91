/// How one read request is answered: a sequence of segments, each either
/// bytes placed in the request's buffer or a range of a source file that the
/// kernel can move itself (splice), without a copy through user space.
public enum ReadSegment: Equatable, Sendable {
    /// Bytes `range` of the request buffer.
    case buffer(Range<Int>)
    /// `count` bytes of source file `fileIndex` from `offset`.
    case source(fileIndex: Int, offset: Int, count: Int)
    /// `count` bytes from `offset` of a persisted copy of the file itself
    /// (open as `descriptor` for the daemon's life).
    case persisted(descriptor: Int32, offset: Int, count: Int)

    public var count: Int {
        switch self {
        case let .buffer(range): return range.count
        case let .source(_, _, count): return count
        case let .persisted(_, _, count): return count
        }
    }
}

extension ExtentReader {
    /// Runs of source bytes shorter than this are copied into the buffer
    /// rather than handed to the kernel: per-piece costs would outweigh the copy.
    public static let minimumSpliceRun = 64 << 10

    /// Answers a read of `range` of `file`: literals and converted bytes go
    /// to `buffer` (which must hold `range.count` bytes), unchanged source
    /// bytes become `.source` segments when `allowSource`. Concatenated, the
    /// segments are exactly the file's bytes in `range`.
    public func segments(of file: VirtualFile, range: Range<Int>, buffer: UnsafeMutableRawBufferPointer,
                         allowSource: Bool = true) throws(ShardFSError) -> [ReadSegment] {
        var segments: [ReadSegment] = []
        var used = 0
        for piece in file.pieces(of: range) {
            let extent = file.extents[piece.extent]
            if allowSource, case let .slice(slice) = extent, slice.sourceDType == slice.outputDType,
               let runs = slice.sourceRuns(of: piece.range, minimumRun: ExtentReader.minimumSpliceRun) {
                for run in runs {
                    if case let .source(index, offset, count)? = segments.last, index == slice.fileIndex, offset + count == run.offset {
                        segments[segments.count - 1] = .source(fileIndex: index, offset: offset, count: count + run.count)
                    } else {
                        segments.append(.source(fileIndex: slice.fileIndex, offset: run.offset, count: run.count))
                    }
                }
                continue
            }
            try read(extent, range: piece.range, into: UnsafeMutableRawBufferPointer(rebasing: buffer[used..<used + piece.range.count]))
            segments.appendBuffer(used..<used + piece.range.count)
            used += piece.range.count
        }
        return segments
    }
}

extension Array where Element == ReadSegment {
    /// Appends buffer bytes `range`, extending the last segment when it ends
    /// where `range` starts: fewer pieces per reply.
    mutating func appendBuffer(_ range: Range<Int>) {
        if case let .buffer(previous)? = last, previous.upperBound == range.lowerBound {
            self[count - 1] = .buffer(previous.lowerBound..<range.upperBound)
        } else {
            append(.buffer(range))
        }
    }
}

extension SliceExtent {
    /// The source file ranges holding packed bytes `range` of this slice (in
    /// the source dtype), or nil when some run would be shorter than
    /// `minimumRun` (a narrow column cut) and copying is the better deal.
    public func sourceRuns(of range: Range<Int>, minimumRun: Int) -> [(offset: Int, count: Int)]? {
        let rowBytes = sourceRowBytes
        var runs: [(offset: Int, count: Int)] = []
        var position = range.lowerBound
        while position < range.upperBound {
            let row = position / rowBytes, column = position % rowBytes
            let count = min(rowBytes - column, range.upperBound - position)
            // Only the first and last run of a request may be short: they are
            // cut by the request, not by the layout.
            if count < minimumRun && rowBytes < minimumRun && rowCount > 1 { return nil }
            runs.append((offset + row * rowStride + column, count))
            position += count
        }
        return runs
    }
}
