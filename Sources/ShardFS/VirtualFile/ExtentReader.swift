import CGather

/// Produces bytes of a virtual file from its source files. One reader per
/// thread: it owns a small scratch buffer for dtype conversion, so memory per
/// reader is bounded whatever the tensor sizes.
public final class ExtentReader {
    public let sources: [SourceFile]
    private let scratch: UnsafeMutableRawBufferPointer
    private let staging: UnsafeMutableRawBufferPointer
    /// Between `startRequest` and `endRequest` (a mount's read): the
    /// sources the request read, to be checked after it, and whether the
    /// descriptor read held a lease.
    public private(set) var requestSources: [(index: Int, leased: Bool)] = []
    /// The sources the request splices from, held in use
    /// (`OpenSourceFile.startUse`) until its reply has gone, so that a lease
    /// break waits for them. Only these: a request over hundreds of small
    /// xser tensor files must not hold each one's descriptor to its end.
    public private(set) var splicedFrom: [OpenSourceFile] = []
    private var inRequest = false
    private var requestLeases: ReadLeases?

    /// `scratchBytes` bounds the conversion buffers (two of this size).
    public init(sources: [SourceFile], scratchBytes: Int = 1 << 20) {
        self.sources = sources
        scratch = .allocate(byteCount: scratchBytes, alignment: 64)
        staging = .allocate(byteCount: scratchBytes, alignment: 64)
    }

    deinit {
        scratch.deallocate()
        staging.deallocate()
    }

    /// Source `index`, open for the access at hand (from the budget of open
    /// files, or opened again and checked to be unchanged).
    func open(_ index: Int) throws(ShardFSError) -> OpenSourceFile {
        guard inRequest else { return try sources[index].open() }
        let handle = try recentlyOpened(index)
        // Leased once per open descriptor; from then on its checks cost no system call.
        let leased = requestLeases.map { handle.leased($0) } ?? false
        if requestSources.last?.index != index && !requestSources.contains(where: { $0.index == index }) {
            requestSources.append((index, leased))
        }
        return handle
    }

    /// The sources this reader's last requests used, with how often each
    /// was taken from here since the budget last saw it: a request takes
    /// its source from here, not through the budget's lock (which every
    /// reader shares), and asks the budget every 64th time so that a source
    /// in use stays recent there. One the budget evicted meanwhile stays
    /// open while held here: at most `recentCapacity` per reader over it.
    private var recent: [(index: Int, handle: OpenSourceFile, uses: Int)] = []
    static let recentCapacity = 4

    private func recentlyOpened(_ index: Int) throws(ShardFSError) -> OpenSourceFile {
        if let position = recent.firstIndex(where: { $0.index == index }), recent[position].uses < 64 {
            recent[position].uses += 1
            return recent[position].handle
        }
        let handle = try sources[index].open()
        recent.removeAll { $0.index == index }
        if recent.count == ExtentReader.recentCapacity { recent.removeFirst() }
        recent.append((index, handle, 0))
        return handle
    }

    /// Starts a request: the sources it reads are noted (and leased, with
    /// `leases`), those it splices from held in use until `endRequest`.
    public func startRequest(leases: ReadLeases?) {
        inRequest = true
        requestLeases = leases
    }

    /// Ends the request: its sources are no longer in use.
    public func endRequest() {
        for handle in splicedFrom { handle.endUse() }
        splicedFrom.removeAll(keepingCapacity: true)
        requestSources.removeAll(keepingCapacity: true)
        inRequest = false
        requestLeases = nil
    }

    /// Fills `buffer` with the file's bytes from `offset` on; returns the byte
    /// count written (short only at end of file).
    public func read(_ file: VirtualFile, at offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(ShardFSError) -> Int {
        var written = 0
        for piece in file.pieces(of: offset..<offset + buffer.count) {
            let out = UnsafeMutableRawBufferPointer(rebasing: buffer[written..<written + piece.range.count])
            try read(file.extents[piece.extent], range: piece.range, into: out)
            written += piece.range.count
        }
        return written
    }

    /// Fills `out` with bytes `range` of one extent.
    public func read(_ extent: Extent, range: Range<Int>, into out: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        switch extent {
        case let .literal(bytes):
            bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
        case .zeros:
            out.initializeMemory(as: UInt8.self, repeating: 0)
        case let .slice(slice):
            try read(from: slice.sourceDType, to: slice.outputDType, range: range, into: out) { (bytes, buffer) throws(ShardFSError) in
                try readSource(slice, bytes: bytes, into: buffer)
            }
        case let .stitched(stitched):
            try read(from: stitched.sourceDType, to: stitched.outputDType, range: range, into: out) { (bytes, buffer) throws(ShardFSError) in
                try readSource(stitched, bytes: bytes, into: buffer)
            }
        }
    }

    /// Output bytes `range` of an extent whose packed source-dtype bytes
    /// `readSource` reads: straight into `out`, or converted.
    private func read(from sourceDType: DType, to outputDType: DType, range: Range<Int>, into out: UnsafeMutableRawBufferPointer,
                      readSource: (Range<Int>, UnsafeMutableRawBufferPointer) throws(ShardFSError) -> Void) throws(ShardFSError) {
        if sourceDType == outputDType {
            try readSource(range, out)
        } else {
            try readConverted(from: sourceDType, to: outputDType, range: range, into: out, readSource: readSource)
        }
    }

    /// Reads the bytes `range` of the slice's rows, packed (as if the rows
    /// were contiguous), in the source dtype.
    func readSource(_ slice: SliceExtent, bytes range: Range<Int>, into out: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        let file = try open(slice.fileIndex)
        let rowBytes = slice.sourceRowBytes
        var position = range.lowerBound
        var written = 0
        if slice.rowCount > 1, rowBytes < ExtentReader.gatherBelowRowBytes, let mapping = file.mapping {
            try gather(slice, from: mapping, file: file, bytes: range, into: out)
            return
        }
        while position < range.upperBound {
            let row = position / rowBytes, column = position % rowBytes
            let count = min(rowBytes - column, range.upperBound - position)
            try file.read(at: slice.offset + row * slice.rowStride + column,
                          into: UnsafeMutableRawBufferPointer(rebasing: out[written..<written + count]))
            position += count
            written += count
        }
    }

    /// Rows narrower than this are copied from the source's mapping rather
    /// than read with a pread each.
    static let gatherBelowRowBytes = 64 << 10
    /// Mapped span a gather copies from in one go (the SIGBUS guard's unit).
    static let gatherWindow = 4 << 20

    /// Like the pread loop of `readSource`, from the file's mapping: partial
    /// rows at either end, whole rows in windows of `gatherWindow` bytes.
    func gather(_ slice: SliceExtent, from mapping: UnsafeRawPointer, file: OpenSourceFile,
                bytes range: Range<Int>, into out: UnsafeMutableRawBufferPointer) throws(ShardFSError) {
        let rowBytes = slice.sourceRowBytes, stride = slice.rowStride
        guard slice.offset + (slice.rowCount - 1) * stride + rowBytes <= file.size else {
            throw ShardFSError.badSource(file: file.name, reason: "is shorter than its header says (truncated while in use?)")
        }
        var position = range.lowerBound
        var written = 0
        while position < range.upperBound {
            let row = position / rowBytes, column = position % rowBytes
            let wholeRows = column == 0 ? min((range.upperBound - position) / rowBytes, max(1, ExtentReader.gatherWindow / stride)) : 0
            let start = slice.offset + row * stride + column
            let source = mapping + start
            let count: Int, status: Int32
            if wholeRows > 0 {
                count = wholeRows * rowBytes
                // Pages not yet in the cache come in 2 MiB reads, not a 4 KiB
                // fault per row (this mapping is MADV_RANDOM): a reader ahead of
                // the prefetcher, alone on a cold file behind 1 ms storage, took
                // 40 s for 50 MB that way. Cached pages cost one cachestat call.
                file.prefetch(start..<start + (wholeRows - 1) * stride + rowBytes)
                status = shardfs_gather_rows(out.baseAddress! + written, source, rowBytes, stride, wholeRows)
                MappedPages.touched(start..<start + (wholeRows - 1) * stride + rowBytes, of: mapping, size: file.size)
            } else {
                count = min(rowBytes - column, range.upperBound - position)
                status = shardfs_gather_rows(out.baseAddress! + written, source, count, 0, 1)
                MappedPages.touched(start..<start + count, of: mapping, size: file.size)
            }
            guard status == 0 else {
                throw ShardFSError.badSource(file: file.name, reason: "became shorter while being read (truncated while in use?)")
            }
            position += count
            written += count
        }
    }

    /// Converts the elements covering output bytes `range`, a scratch-full at
    /// a time; partial elements at either end go through `staging`.
    /// `readSource` reads packed source-dtype bytes of the extent.
    func readConverted(from sourceDType: DType, to outputDType: DType, range: Range<Int>, into out: UnsafeMutableRawBufferPointer,
                       readSource: (Range<Int>, UnsafeMutableRawBufferPointer) throws(ShardFSError) -> Void) throws(ShardFSError) {
        let inSize = sourceDType.size, outSize = outputDType.size
        let perChunk = min(scratch.count / inSize, staging.count / outSize)
        var element = range.lowerBound / outSize
        let endElement = (range.upperBound + outSize - 1) / outSize
        while element < endElement {
            let count = min(perChunk, endElement - element)
            let source = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<count * inSize])
            try readSource(element * inSize..<(element + count) * inSize, source)
            let chunkStart = element * outSize, chunkEnd = (element + count) * outSize
            let wanted = max(chunkStart, range.lowerBound)..<min(chunkEnd, range.upperBound)
            let destinationOffset = wanted.lowerBound - range.lowerBound
            if wanted.count == chunkEnd - chunkStart {
                DTypeConversion.convert(source.baseAddress!, sourceDType,
                                        out.baseAddress! + destinationOffset, outputDType, count: count)
            } else {
                DTypeConversion.convert(source.baseAddress!, sourceDType, staging.baseAddress!, outputDType, count: count)
                (out.baseAddress! + destinationOffset).copyMemory(
                    from: staging.baseAddress! + (wanted.lowerBound - chunkStart), byteCount: wanted.count)
            }
            element += count
        }
    }

    // MARK: Splicing (a mount's replies)

    /// Pieces shorter than this, and rows narrower (a row-parallel cut at
    /// TP 32 is 512-byte rows), are copied into the buffer rather than
    /// handed to the kernel: a splice per piece would cost more than the copy.
    public static let minimumSpliceRun = 64 << 10

    /// Answers a read of `range` of `file` as segments: literal, converted
    /// and narrow-row bytes are made in `buffer` (which must hold
    /// `range.count` bytes); unchanged source bytes in long runs become
    /// `.source` segments when `splice` says so of their source's open file.
    /// Concatenated, the segments are exactly the file's bytes in `range`.
    public func segments(of file: VirtualFile, range: Range<Int>, buffer: UnsafeMutableRawBufferPointer,
                         splice: ((OpenSourceFile) -> Bool)?) throws(ShardFSError) -> [ReadSegment] {
        var segments: [ReadSegment] = []
        var used = 0
        for piece in file.pieces(of: range) {
            let extent = file.extents[piece.extent]
            if let splice, case let .slice(slice) = extent, slice.sourceDType == slice.outputDType,
               piece.range.count >= ExtentReader.minimumSpliceRun,
               slice.rowCount == 1 || slice.sourceRowBytes >= ExtentReader.minimumSpliceRun {
                let handle = try open(slice.fileIndex)
                if splice(handle) {
                    if !splicedFrom.contains(where: { $0 === handle }) {
                        guard handle.startUse() else {
                            throw ShardFSError.sourceChanged(file: sources[slice.fileIndex].name, reason: OpenSourceFile.leaseBreak)
                        }
                        splicedFrom.append(handle)
                    }
                    for run in slice.sourceRuns(of: piece.range) {
                        segments.appendSource(handle.descriptor.rawValue, offset: run.offset, count: run.count)
                    }
                    continue
                }
            }
            try read(extent, range: piece.range, into: UnsafeMutableRawBufferPointer(rebasing: buffer[used..<used + piece.range.count]))
            segments.appendBuffer(used..<used + piece.range.count)
            used += piece.range.count
        }
        return segments
    }
}

extension SliceExtent {
    /// The source file ranges holding packed bytes `range` of this slice (in
    /// the source dtype): a run per row it touches.
    func sourceRuns(of range: Range<Int>) -> [(offset: Int, count: Int)] {
        let rowBytes = sourceRowBytes
        var runs: [(offset: Int, count: Int)] = []
        var position = range.lowerBound
        while position < range.upperBound {
            let row = position / rowBytes, column = position % rowBytes
            let count = min(rowBytes - column, range.upperBound - position)
            runs.append((offset + row * rowStride + column, count))
            position += count
        }
        return runs
    }
}
