/// How one read request is answered: a sequence of segments, each either
/// bytes placed in the request's buffer or a range of a persisted copy that
/// the kernel can move itself (splice), without a copy through user space.
///
/// Source bytes are always copied into the buffer, never spliced: the check
/// that the sources are unchanged (`MountedFileSystem.read`) must come after
/// the bytes left the source, and a splice moves them only when the reply is
/// sent, after any check. (Measured, the copy costs nothing: BENCHMARKS.md.)
public enum ReadSegment: Equatable, Sendable {
    /// Bytes `range` of the request buffer.
    case buffer(Range<Int>)
    /// `count` bytes from `offset` of a persisted copy of the file itself
    /// (open as `descriptor` until the reply is sent).
    case persisted(descriptor: Int32, offset: Int, count: Int)

    public var count: Int {
        switch self {
        case let .buffer(range): return range.count
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
}
