import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Files of a mount that the materialiser has persisted and verified: their
/// reads are answered from that real file (one splice, no gathering or
/// conversion), so serving gets cheaper as persisting proceeds.
///
/// The copy has the real CRC-32s; the mount serves 0 in those fields (a
/// lazily made file cannot know them), so the CRC fields are answered with
/// zeros and the bytes a reader sees never change when a file switches over.
public final class PersistedCopies: Sendable {
    /// A verified copy. Its file is opened through the budget of open files
    /// like a source (an xser layout persists thousands of files), and a
    /// copy replaced or dropped closes once no read holds it.
    final class Copy: Sendable {
        let file: SourceFile
        /// Offsets of the 4-byte CRC fields, ascending.
        let crcFields: [Int]

        init(file: SourceFile, crcFields: [Int]) {
            self.file = file
            self.crcFields = crcFields
        }
    }

    /// The copies by inode - 1, and how many there are. One lock for all:
    /// a read holds it for an array lookup, and a slot of its own per inode
    /// cost a lock object and a mutex for each of a training tag's 300,000
    /// files, where this is a pointer each.
    private let copies: Locked<(byInode: [Copy?], count: Int)>

    init(inodes: Int) {
        copies = Locked(([Copy?](repeating: nil, count: inodes), 0))
    }

    /// Files now served from their copies.
    public var servedCount: Int { copies.withLock { $0.count } }

    /// Serves `inode` (`file`) from the real file at `path` from now on.
    /// The caller has verified the copy's bytes.
    func adopt(_ inode: UInt64, file: VirtualFile, path: String) throws(ShardFSError) {
        let slash = path.lastIndex(of: "/")
        let copyFile = try SourceFile(directory: slash.map { String(path[..<$0]) } ?? ".",
                                      name: slash.map { String(path[path.index(after: $0)...]) } ?? path)
        guard copyFile.size == file.size else {
            throw ShardFSError.badSource(file: path, reason: "is not \(file.size) bytes long")
        }
        let copy = Copy(file: copyFile, crcFields: file.crcSlots.flatMap(\.fieldOffsets).sorted())
        let replaced: Copy? = copies.withLock { state in
            let index = Int(inode - 1)
            let old = state.byInode[index]
            state.byInode[index] = copy
            if old == nil { state.count += 1 }
            return old
        }
        // Released here, outside the lock: its file leaves the budget of open files.
        withExtendedLifetime(replaced) {}
    }

    /// The copy of `inode`, if it has one that is still what was verified
    /// (a copy changed behind our back is dropped: the sources answer again).
    func copy(_ inode: UInt64) -> Copy? {
        let index = Int(inode) - 1
        guard let copy = copies.withLock({ index >= 0 && index < $0.byInode.count ? $0.byInode[index] : nil }) else { return nil }
        if copy.file.change() == nil { return copy }
        // A read may still hold it: it closes when the last one lets go.
        copies.withLock { state in
            guard state.byInode[index] === copy else { return }
            state.byInode[index] = nil
            state.count -= 1
        }
        return nil
    }
}

extension PersistedCopies.Copy {
    /// The segments of `range` (within the file): the copy's bytes, with the
    /// CRC fields as zeros in `buffer`. With `allowSplice`, the copy's bytes
    /// are handed over as its descriptor (the caller holds `handle` until the
    /// reply is sent); else everything is read into `buffer`.
    func segments(of range: Range<Int>, handle: OpenSourceFile, buffer: UnsafeMutableRawBufferPointer,
                  allowSplice: Bool) throws(ShardFSError) -> [ReadSegment] {
        var segments: [ReadSegment] = []
        var used = 0
        var position = range.lowerBound
        func take(upTo end: Int) throws(ShardFSError) {
            guard end > position else { return }
            if allowSplice {
                segments.append(.persisted(descriptor: handle.descriptor.rawValue, offset: position, count: end - position))
            } else {
                try handle.read(at: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[used..<used + end - position]))
                segments.appendBuffer(used..<used + end - position)
                used += end - position
            }
            position = end
        }
        // The first field that may overlap the range (fields are 4 bytes).
        var field = crcFields.partitionPoint { $0 + 4 <= range.lowerBound }
        while field < crcFields.count, crcFields[field] < range.upperBound {
            let start = crcFields[field], end = min(start + 4, range.upperBound)
            try take(upTo: max(start, position))
            if end > position {
                UnsafeMutableRawBufferPointer(rebasing: buffer[used..<used + end - position]).initializeMemory(as: UInt8.self, repeating: 0)
                segments.appendBuffer(used..<used + end - position)
                used += end - position
                position = end
            }
            field += 1
        }
        try take(upTo: range.upperBound)
        return segments
    }

}

extension Array where Element == Int {
    /// The first index whose element does not satisfy `belongsBefore` (the
    /// array being partitioned by it).
    func partitionPoint(_ belongsBefore: (Int) -> Bool) -> Int {
        var low = 0, high = count
        while low < high {
            let mid = (low + high) / 2
            if belongsBefore(self[mid]) { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
