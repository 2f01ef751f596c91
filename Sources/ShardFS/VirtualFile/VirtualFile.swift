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

    public var extents: [Extent] { materialised.made!.extents }
    /// `starts[i]` is the file offset of `extents[i]`.
    public var starts: [Int] { materialised.made!.starts }
    public var crcSlots: [CRCSlot] { materialised.made!.crcSlots }

    /// This file with its extents made (itself, unless it is a recipe).
    public var materialised: VirtualFile { made == nil ? MadeFiles.shared.file(recipe!) : self }

    /// A file made by `recipe` whenever it is read; `recipe` must give a
    /// file of `size` bytes, the same every time.
    public init(size: Int, recipe: @escaping @Sendable () -> VirtualFile) {
        self.size = size
        self.made = nil
        self.recipe = VirtualFileRecipe { recipe().materialised }
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
    static let shared = MadeFiles(capacity: 64)

    private let capacity: Int
    /// Most recent last; each recipe kept with its file, so its identity
    /// cannot be reused while it is here.
    private let entries = Locked<[(recipe: VirtualFileRecipe, file: VirtualFile)]>([])

    init(capacity: Int) { self.capacity = capacity }

    func file(_ recipe: VirtualFileRecipe) -> VirtualFile {
        let found: VirtualFile? = entries.withLock { entries in
            guard let index = entries.lastIndex(where: { $0.recipe === recipe }) else { return nil }
            let entry = entries.remove(at: index)
            entries.append(entry)
            return entry.file
        }
        if let found { return found }
        let file = recipe.make()
        entries.withLock { entries in
            if !entries.contains(where: { $0.recipe === recipe }) { entries.append((recipe, file)) }
            if entries.count > capacity { entries.removeFirst(entries.count - capacity) }
        }
        return file
    }
}
