/// Where a zip record's CRC-32 goes once its data is known: the data's byte
/// range in the file and the offsets of the 4-byte CRC fields (in its data
/// descriptor and its central-directory entry).
public struct CRCSlot: Equatable, Sendable {
    public let data: Range<Int>
    public let fieldOffsets: [Int]
}

/// A file that exists only as a recipe: an ordered list of extents whose
/// concatenation is the file. Its size is known without reading any data,
/// and any byte range can be produced by reading only the source bytes it
/// covers. Served files carry 0 in their CRC fields; writers that see all
/// bytes fill them in from `crcSlots`.
///
/// A file can also be held as only its size and how to make its extents
/// (`init(size:recipe:)`): a 70B training tag has 1,024 optimizer files of
/// a few hundred tensors, and as xser 300,000 small files, whose zip
/// framing held at once took a gigabyte. Such a file is made where it is
/// read (`materialised`, once per read or write, not per extent), and kept
/// a while in `MadeFiles` for the reads that follow.
public struct VirtualFile: Sendable {
    private struct Made: Sendable {
        let extents: [Extent]
        let starts: [Int]
        let crcSlots: [CRCSlot]
    }

    public let size: Int
    private let made: Made?
    private let recipe: VirtualFileRecipe?
    /// A recipe's source files, when its maker knows them without making it.
    private let declaredSources: [Int]?
    /// The read size a reader should buffer by (`st_blksize`), where its
    /// maker knows better than the size alone tells: a DCP file is many
    /// archives read one by one, a seek and a few small reads each.
    public var preferredReadSize: Int?

    public var extents: [Extent] { materialised.made!.extents }
    /// `starts[i]` is the file offset of `extents[i]`.
    public var starts: [Int] { materialised.made!.starts }
    public var crcSlots: [CRCSlot] { materialised.made!.crcSlots }

    /// This file with its extents made (itself, unless it is a recipe).
    public var materialised: VirtualFile { made == nil ? MadeFiles.shared.file(recipe!) : self }

    /// A file made by `recipe` whenever it is read; `recipe` must give a
    /// file of `size` bytes, the same every time.
    /// `sources`, when given, are the source files its extents read (what a
    /// mount watches for it), so that nothing needs making to know them.
    public init(size: Int, sources: [Int]? = nil, recipe: @escaping @Sendable () -> VirtualFile) {
        self.size = size
        self.made = nil
        self.recipe = VirtualFileRecipe { recipe().materialised }
        self.declaredSources = sources
    }

    /// The source files this file's extents read, in order.
    public var sourceFileIndexes: [Int] {
        if let declaredSources { return declaredSources }
        var indexes = Set<Int>()
        for extent in extents { indexes.formUnion(extent.sourceFileIndexes) }
        return indexes.sorted()
    }

    /// A recipe file, its size taken from one making.
    public static func recipe(_ make: @escaping @Sendable () -> VirtualFile) -> VirtualFile {
        VirtualFile(size: make().size, recipe: make)
    }

    public init(extents: [Extent], crcSlots: [CRCSlot] = []) {
        // Adjacent literals are merged: fewer, larger pieces per read. A run
        // of literals is gathered in one buffer, not re-concatenated per piece.
        var merged: [Extent] = []
        var pending: [UInt8] = []
        for extent in extents where extent.byteCount > 0 {
            switch extent {
            case let .literal(bytes):
                pending += bytes
            case .zeros, .slice, .stitched:
                if !pending.isEmpty { merged.append(.literal(pending)) }
                pending = []
                merged.append(extent)
            }
        }
        if !pending.isEmpty { merged.append(.literal(pending)) }
        var starts: [Int] = []
        var offset = 0
        for extent in merged {
            starts.append(offset)
            offset += extent.byteCount
        }
        self.made = Made(extents: merged, starts: starts, crcSlots: crcSlots)
        self.size = offset
        self.recipe = nil
        self.declaredSources = nil
    }

    /// Index of the extent holding byte `offset` (which must be < size).
    public func extentIndex(containing offset: Int) -> Int {
        let starts = self.starts
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
        guard made != nil else { return materialised.pieces(of: range) }
        let starts = self.starts, extents = self.extents
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
}

/// How to make a recipe file; its identity keys `MadeFiles`.
final class VirtualFileRecipe: Sendable {
    let make: @Sendable () -> VirtualFile
    init(_ make: @escaping @Sendable () -> VirtualFile) { self.make = make }
}

/// The recipe files made most recently, kept for the reads that follow: a
/// reader asks for a file once per request (1 MiB through the mount), and an
/// optimizer file of a few hundred tensors takes a fraction of a
/// millisecond to make. Bounded (`capacity` files, each its extents and zip
/// framing: tens of kilobytes), whatever the plan's size.
final class MadeFiles: Sendable {
    /// 64 files, and at most 64 MiB of them: a DCP file of a 70B state
    /// split 64 ways is a few thousand archives, megabytes of framing.
    static let shared = MadeFiles(capacity: 64, byteBudget: 64 << 20)

    private let capacity: Int
    private let byteBudget: Int
    /// Most recent last; each recipe kept with its file, so its identity
    /// cannot be reused while it is here.
    private let entries = Locked<[(recipe: VirtualFileRecipe, file: VirtualFile, cost: Int)]>([])

    init(capacity: Int, byteBudget: Int = .max) {
        self.capacity = capacity
        self.byteBudget = byteBudget
    }

    /// About what a made file holds in memory: its literal bytes and, per
    /// extent, the extent and its start.
    static func cost(_ file: VirtualFile) -> Int {
        file.extents.reduce(0) { total, extent in
            if case let .literal(bytes) = extent { return total + bytes.count + 64 }
            if case let .stitched(s) = extent { return total + 64 + s.segments.count * 40 }
            return total + 64
        }
    }

    func file(_ recipe: VirtualFileRecipe) -> VirtualFile {
        let found: VirtualFile? = entries.withLock { entries in
            guard let index = entries.lastIndex(where: { $0.recipe === recipe }) else { return nil }
            let entry = entries.remove(at: index)
            entries.append(entry)
            return entry.file
        }
        if let found { return found }
        let file = recipe.make()
        let cost = MadeFiles.cost(file)
        entries.withLock { entries in
            if !entries.contains(where: { $0.recipe === recipe }) { entries.append((recipe, file, cost)) }
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
            var total = entries.reduce(0) { $0 + $1.cost }
            // The newest stays even alone over the budget: its reader needs it.
            while total > byteBudget, entries.count > 1 {
                total -= entries.removeFirst().cost
            }
        }
        return file
    }
}
