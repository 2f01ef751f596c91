/// How one read request is answered: a sequence of segments, each either
/// bytes placed in the request's buffer or a range of a file the kernel can
/// move itself (splice), without a copy through user space.
///
/// A source's bytes are spliced only while nothing can change them before
/// the reply is sent: under a read lease (`ReadLeases`), or where the mount
/// was told to splice unleased sources too (`SourceSplicing.always`).
public enum ReadSegment: Equatable, Sendable {
    /// Bytes `range` of the request buffer.
    case buffer(Range<Int>)
    /// `count` bytes from `offset` of a source file, open as `descriptor`
    /// and held in use until the reply is sent.
    case source(descriptor: Int32, offset: Int, count: Int)
    /// `count` bytes from `offset` of a persisted copy of the file itself
    /// (open as `descriptor` until the reply is sent).
    case persisted(descriptor: Int32, offset: Int, count: Int)

    public var count: Int {
        switch self {
        case let .buffer(range): return range.count
        case let .source(_, _, count): return count
        case let .persisted(_, _, count): return count
        }
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

    /// Appends source bytes, extending the last segment when they follow it
    /// in the same file.
    mutating func appendSource(_ descriptor: Int32, offset: Int, count: Int) {
        if case let .source(previous, start, length)? = last, previous == descriptor, start + length == offset {
            self[self.count - 1] = .source(descriptor: descriptor, offset: start, count: length + count)
        } else {
            append(.source(descriptor: descriptor, offset: offset, count: count))
        }
    }
}
