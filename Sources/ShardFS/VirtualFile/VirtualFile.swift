/// Where a zip record's CRC-32 goes once its data is known: the data's byte
/// range in the file and the offsets of the 4-byte CRC fields (in its data
/// descriptor and its central-directory entry).
public struct CRCSlot: Equatable, Sendable {
    public let data: Range<Int>
    public let fieldOffsets: [Int]
}

/// A file as an ordered list of extents whose concatenation is the file. Its
/// size is known without reading any data, and any byte range can be
/// produced by reading only the source bytes it covers. Served files carry 0
/// in their CRC fields; writers that see all bytes fill them in from
/// `crcSlots`.
///
/// A plan holds its files as `PlannedFile`s: some made at planning (this),
/// some only a size and how to make this where they are read.
public struct VirtualFile: Sendable {
    public let size: Int
    public let extents: [Extent]
    /// `starts[i]` is the file offset of `extents[i]`.
    public let starts: [Int]
    public let crcSlots: [CRCSlot]

    public init(extents: [Extent], crcSlots: [CRCSlot] = []) {
        var builder = Builder(capacity: extents.count)
        for extent in extents { builder.append(extent) }
        self = builder.finish(crcSlots: crcSlots)
    }

    /// A file of `literals`, each its own extent, none copied (a DCP
    /// `.metadata` is tens of megabytes, kept in pieces).
    public init(literals: [[UInt8]]) {
        var starts: [Int] = [], extents: [Extent] = [], offset = 0
        for bytes in literals where !bytes.isEmpty {
            starts.append(offset)
            extents.append(.literal(bytes))
            offset += bytes.count
        }
        self.init(extents: extents, starts: starts, crcSlots: [], size: offset)
    }

    private init(extents: [Extent], starts: [Int], crcSlots: [CRCSlot], size: Int) {
        self.extents = extents
        self.starts = starts
        self.crcSlots = crcSlots
        self.size = size
    }

    /// A file put together extent by extent, merged as they come: a file of
    /// many parts (a `.distcp` file is thousands of archives) is built
    /// without a list of all their extents beside the file's own.
    ///
    /// Adjacent literals are merged: fewer, larger pieces per read. A run of
    /// literals is copied once into a buffer of exactly its size (grown by
    /// appending, a `.distcp` file's framing took four times its size); a
    /// lone literal is kept as it is, not copied (a DCP `.metadata` is tens
    /// of megabytes).
    public struct Builder {
        private var merged: [Extent] = []
        private var starts: [Int] = []
        /// The literals of the current run, and their bytes.
        private var run: [[UInt8]] = []
        private var runBytes = 0
        private var offset = 0

        public init(capacity: Int = 0) {
            merged.reserveCapacity(capacity)
            starts.reserveCapacity(capacity)
        }

        /// The file's size so far.
        public var size: Int { offset + runBytes }

        public mutating func append(_ extent: Extent) {
            guard extent.byteCount > 0 else { return }
            switch extent {
            case let .literal(bytes):
                run.append(bytes)
                runBytes += bytes.count
            case .zeros, .slice, .stitched:
                flush()
                add(extent)
            }
        }

        public mutating func append(contentsOf extents: [Extent]) {
            for extent in extents { append(extent) }
        }

        public mutating func finish(crcSlots: [CRCSlot] = []) -> VirtualFile {
            flush()
            return VirtualFile(extents: merged, starts: starts, crcSlots: crcSlots, size: offset)
        }

        private mutating func flush() {
            guard let first = run.first else { return }
            if run.count == 1 {
                add(.literal(first))
            } else {
                add(.literal([UInt8](unsafeUninitializedCapacity: runBytes) { buffer, count in
                    for bytes in run {
                        count = buffer[count...].initialize(fromContentsOf: bytes)
                    }
                }))
            }
            run.removeAll(keepingCapacity: true)
            runBytes = 0
        }

        private mutating func add(_ extent: Extent) {
            merged.append(extent)
            starts.append(offset)
            offset += extent.byteCount
        }
    }

    /// The source files this file's extents read, in order.
    public var sourceFileIndexes: [Int] {
        var indexes = Set<Int>()
        for extent in extents { indexes.formUnion(extent.sourceFileIndexes) }
        return indexes.sorted()
    }

    /// Index of the extent holding byte `offset` (which must be < size).
    public func extentIndex(containing offset: Int) -> Int {
        var low = 0, high = starts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if starts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// The pieces that make up `range`: each an extent index and the byte
    /// range within that extent. This is the whole of "which source bytes
    /// serve this read"; readers (convert, FUSE) act on it.
    public func pieces(of range: Range<Int>) -> [(extent: Int, range: Range<Int>)] {
        let range = range.clamped(to: 0..<size)
        guard !range.isEmpty else { return [] }
        var result: [(extent: Int, range: Range<Int>)] = []
        var index = extentIndex(containing: range.lowerBound)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let start = starts[index], count = extents[index].byteCount
            let end = min(range.upperBound, start + count)
            result.append((index, (offset - start)..<(end - start)))
            offset = end
            index += 1
        }
        return result
    }

    /// About what this file holds in memory: its literal bytes and, per
    /// extent, the extent and its start, and its CRC slots, each with the
    /// array of its field offsets (what `MadeFiles` bounds: a 64-shard
    /// `.distcp` file has tens of thousands of slots, which uncounted let a
    /// mount hold several times its budget).
    var memoryCost: Int {
        let extentCost = extents.reduce(0) { total, extent in
            if case let .literal(bytes) = extent { return total + bytes.count + 64 }
            if case let .stitched(s) = extent { return total + 64 + s.segments.count * 40 }
            return total + 64
        }
        return extentCost + starts.count * MemoryLayout<Int>.stride + crcSlots.count * (MemoryLayout<CRCSlot>.stride + 64)
    }
}
