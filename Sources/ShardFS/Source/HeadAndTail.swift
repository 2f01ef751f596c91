/// The first and last bytes of a file, read once, answering the small reads
/// of a parser from memory.
///
/// Opening an NxD tag parses every file in it (a trained 405B tag: up to
/// 60,000), and a torch.save zip is read in a dozen small pieces (the end
/// records, the central directory, each local header, data.pkl), all near
/// its start or its end. Read one by one that was 14 preads per file; with
/// this it is one (a small file, read whole) or two.
struct HeadAndTail {
    /// Bytes read at each end, at most.
    static let span = 64 << 10

    private let file: SourceFile
    private let head: [UInt8]
    /// Bytes from `tailStart` to the end of the file.
    private let tail: [UInt8]
    private let tailStart: Int

    init(_ file: SourceFile) throws(ShardFSError) {
        self.file = file
        let handle = try file.open()
        if file.size <= 2 * HeadAndTail.span {
            head = try handle.readBytes(at: 0, count: file.size)
            tail = []
            tailStart = file.size
        } else {
            head = try handle.readBytes(at: 0, count: HeadAndTail.span)
            tailStart = file.size - HeadAndTail.span
            tail = try handle.readBytes(at: tailStart, count: HeadAndTail.span)
        }
    }

    /// `count` bytes at `offset`: from memory when they lie in either end,
    /// else read from the file.
    func read(_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= file.size - count else {
            return try file.readBytes(at: offset, count: count)  // reports the short file
        }
        if offset + count <= head.count { return Array(head[offset..<offset + count]) }
        if offset >= tailStart { return Array(tail[(offset - tailStart)..<(offset - tailStart + count)]) }
        return try file.readBytes(at: offset, count: count)
    }
}
