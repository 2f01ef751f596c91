import CGather
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Bounds the page-table entries that gathers leave behind in the sources'
/// mappings, process-wide, releasing the least recently used first.
///
/// A narrow column cut touches every page of its source rows (at TP=32 a
/// 4 KiB page holds 128 bytes a rank wants), so mapping and unmapping cost
/// more than the copy. Sibling ranks read the same rows at about the same
/// time (NxD loads 8 ranks at once, each front to back), so a page mapped
/// for one is wanted by the next seven soon after. Releasing everything once
/// a budget was crossed made them fault it all again; releasing the chunks
/// unused for longest keeps the rows the readers are in mapped while RSS
/// stays bounded (the pages themselves stay in the page cache; only this
/// process's mapping of them counts towards its RSS).
enum MappedPages {
    /// About the RSS file-mapped pages may add (plus the chunks being copied
    /// by other threads at the moment of release).
    static let budget = 64 << 20
    /// The unit of the record and of release.
    static let chunkBytes = 2 << 20

    private static let chunks = Locked(MappedChunks(chunkBytes: chunkBytes, limit: budget / chunkBytes))
    /// Releases taken from the record but not yet done. The madvise calls
    /// run outside the lock (they were a sixth of a warm read's CPU, and
    /// under the lock every gathering thread waited on them); `forget`
    /// waits for this to drain instead.
    private static let releasing = Atomic<Int>(0)

    /// Records bytes `span` (offsets in the file) touched through `mapping`
    /// (of `size` bytes), and releases what falls out of the budget.
    ///
    /// A mapping is unmapped (when its file is closed to stay within the
    /// open-file budget) only after `forget` returns, and `forget` waits for
    /// every release taken from the record before it: so no release can hit
    /// an address range that was unmapped and then reused by other memory,
    /// which MADV_DONTNEED would wipe.
    static func touched(_ span: Range<Int>, of mapping: UnsafeRawPointer, size: Int) {
        let released: [(mapping: Int, bytes: Range<Int>)] = chunks.withLock { chunks in
            let released = chunks.touch(span, mapping: Int(bitPattern: mapping), size: size)
            if !released.isEmpty { releasing.add(1, ordering: .sequentiallyConsistent) }
            return released
        }
        guard !released.isEmpty else { return }
        for range in released {
            shardfs_release_mapped(UnsafeRawPointer(bitPattern: range.mapping)! + range.bytes.lowerBound, range.bytes.count)
        }
        releasing.subtract(1, ordering: .sequentiallyConsistent)
    }
}

extension MappedPages {
    /// Drops every record of `mapping`, which is about to be unmapped; after
    /// it returns no release touches that mapping.
    static func forget(_ mapping: UnsafeRawPointer) {
        chunks.withLock { $0.forget(mapping: Int(bitPattern: mapping)) }
        while releasing.load(ordering: .sequentiallyConsistent) > 0 { usleep(20) }
    }
}

/// The bookkeeping of `MappedPages`: which chunks of which mappings were
/// touched when, and which to release.
struct MappedChunks {
    struct Chunk: Hashable {
        /// The mapping's base address: one per open source.
        let mapping: Int
        let index: Int
        /// The mapping's length: a release never reaches past it (what lies
        /// beyond may be other memory, which MADV_DONTNEED would wipe).
        let mappingSize: Int
    }

    let chunkBytes: Int
    /// Chunks kept mapped at most.
    let limit: Int
    private var clock = 0
    /// Chunks mapped (as far as we know), with the clock of their last use.
    private(set) var lastUse: [Chunk: Int] = [:]

    init(chunkBytes: Int, limit: Int) {
        self.chunkBytes = chunkBytes
        self.limit = max(1, limit)
    }

    mutating func forget(mapping: Int) {
        lastUse = lastUse.filter { $0.key.mapping != mapping }
    }

    /// Records `span` touched; when more than `limit` chunks are on record,
    /// returns the least recently used ones to release (until a quarter of
    /// the limit is free again), as byte ranges within their mapping.
    mutating func touch(_ span: Range<Int>, mapping: Int, size: Int) -> [(mapping: Int, bytes: Range<Int>)] {
        guard !span.isEmpty else { return [] }
        clock += 1
        for index in span.lowerBound / chunkBytes...(span.upperBound - 1) / chunkBytes {
            lastUse[Chunk(mapping: mapping, index: index, mappingSize: size)] = clock
        }
        guard lastUse.count > limit else { return [] }
        let oldest = lastUse.sorted { $0.value < $1.value }.prefix(lastUse.count - limit * 3 / 4).map(\.key)
        var released: [(mapping: Int, bytes: Range<Int>)] = []
        for chunk in oldest {
            lastUse[chunk] = nil
            let start = chunk.index * chunkBytes
            if start < chunk.mappingSize { released.append((chunk.mapping, start..<min(start + chunkBytes, chunk.mappingSize))) }
        }
        return released
    }
}
