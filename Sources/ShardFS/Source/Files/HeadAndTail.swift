/// The bytes of a file near its start and its end, read a block at a time
/// and kept, answering the small reads of a parser from memory.
///
/// Opening an NxD tag parses every file in it (a trained 405B tag: up to
/// 60,000), and a torch.save zip is read in a dozen small pieces: the end
/// records and the central directory at its end, the local headers and
/// data.pkl at its start. Read one by one that was 14 preads per file; read
/// 64 KiB at each end it was one or two, but half of every file of a tag
/// whose tensors are a few hundred KiB. So: the last `block` bytes first,
/// then the start, grown a block at a time as the parser asks.
final class HeadAndTail {
    /// The first read at each end.
    static let block = 4 << 10
    /// Either end grows in steps of this, up to `limit`; reads beyond go to the file.
    static let step = 16 << 10
    static let limit = 1 << 20

    private let file: SourceFile
    private let handle: OpenSourceFile
    private var head: [UInt8]
    /// Bytes from `tailStart` to the end of the file.
    private var tail: [UInt8]
    private var tailStart: Int

    init(_ file: SourceFile) throws(ShardFSError) {
        self.file = file
        handle = try file.open()
        tailStart = max(0, file.size - HeadAndTail.block)
        tail = try handle.readBytes(at: tailStart, count: file.size - tailStart)
        head = tailStart == 0 ? tail : []
    }

    /// `count` bytes at `offset`: from memory when they lie in either end
    /// (which grows to cover a read near it), else read from the file.
    func read(_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8] {
        guard offset >= 0, count >= 0, offset <= file.size - count else {
            return try file.readBytes(at: offset, count: count)  // reports the short file
        }
        let end = offset + count
        if offset >= tailStart { return Array(tail[(offset - tailStart)..<(end - tailStart)]) }
        if end <= head.count { return Array(head[offset..<end]) }
        let step = HeadAndTail.step
        if end <= HeadAndTail.limit, offset <= head.count + step {
            let grown = min(file.size, (end + step - 1) / step * step)
            // Room for all the head may grow to, once: grown step by step, a
            // 200 KiB optimizer file's head was reallocated (and its pages
            // faulted in afresh) at each doubling.
            if head.capacity < grown { head.reserveCapacity(min(file.size, HeadAndTail.limit)) }
            head += try handle.readBytes(at: head.count, count: grown - head.count)
            return Array(head[offset..<end])
        }
        if file.size - offset <= HeadAndTail.limit, end >= tailStart - step {
            let start = offset / step * step
            tail = try handle.readBytes(at: start, count: tailStart - start) + tail
            tailStart = start
            return Array(tail[(offset - tailStart)..<(end - tailStart)])
        }
        return try handle.readBytes(at: offset, count: count)
    }
}
