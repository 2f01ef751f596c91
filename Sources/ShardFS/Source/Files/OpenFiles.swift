/// The budget of open source files: at most `capacity` of them are kept open
/// (each a descriptor and two mappings), the least recently used closed first.
///
/// A trained 405B tag is up to 60,000 files, a node's soft open-file limit
/// 1024 and `vm.max_map_count` 65,530: holding every source open for the
/// life of a mount or convert fails at the first of them. Readers ask for a
/// file's `OpenSourceFile` just for the access at hand (a header parse, a
/// gather window, a pread); one evicted while a reader still holds it closes
/// when that reader lets go, so the open count is at most `capacity` plus one
/// per thread reading at that moment.
public final class OpenFiles: Sendable {
    /// The process-wide budget every `SourceFile` uses unless told otherwise.
    public static let shared = OpenFiles(capacity: DescriptorLimit.sourceBudget(softLimit: DescriptorLimit.soft))

    public let capacity: Int

    private struct Entry {
        let handle: OpenSourceFile
        /// Neighbours in use order: `newer` towards the most recently used.
        var older: Int?
        var newer: Int?
    }

    private struct State {
        var entries: [Int: Entry] = [:]
        var newest: Int?
        var oldest: Int?
        var opened = 0
        var evicted = 0

        mutating func unlink(_ id: Int) {
            guard let entry = entries[id] else { return }
            if let older = entry.older { entries[older]!.newer = entry.newer } else { oldest = entry.newer }
            if let newer = entry.newer { entries[newer]!.older = entry.older } else { newest = entry.older }
        }

        mutating func linkNewest(_ id: Int) {
            entries[id]!.older = newest
            entries[id]!.newer = nil
            if let newest { entries[newest]!.newer = id } else { oldest = id }
            newest = id
        }
    }

    private let state = Locked(State())

    public init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    /// Files open now (held by the budget; evicted ones still in a reader's
    /// hands are not counted).
    public var openCount: Int { state.withLock { $0.entries.count } }

    /// Opens so far, and closes forced by the budget.
    public var counts: (opened: Int, evicted: Int) { state.withLock { ($0.opened, $0.evicted) } }

    /// File `id`'s open handle, or nil when it is not open; marked most
    /// recently used unless it is only being looked at (`touch` false).
    func cached(_ id: Int, touch: Bool = true) -> OpenSourceFile? {
        state.withLock { s in
            guard let entry = s.entries[id] else { return nil }
            if touch && s.newest != id {
                s.unlink(id)
                s.linkNewest(id)
            }
            return entry.handle
        }
    }

    /// Keeps `handle` as file `id`'s, evicting the least recently used past
    /// the capacity. When another thread opened the same file meanwhile, its
    /// handle is kept and returned instead.
    func insert(_ id: Int, _ handle: OpenSourceFile) -> OpenSourceFile {
        var evicted: [OpenSourceFile] = []
        let kept: OpenSourceFile = state.withLock { s in
            if let existing = s.entries[id] { return existing.handle }
            s.entries[id] = Entry(handle: handle)
            s.linkNewest(id)
            s.opened += 1
            while s.entries.count > capacity, let oldest = s.oldest {
                s.unlink(oldest)
                evicted.append(s.entries.removeValue(forKey: oldest)!.handle)
                s.evicted += 1
            }
            return handle
        }
        // Closed (if no reader holds them) outside the lock: munmap and
        // close may wait on storage.
        evicted.removeAll()
        return kept
    }

    /// Forgets file `id` (its `SourceFile` is gone); its handle closes once
    /// no reader holds it.
    func remove(_ id: Int) {
        let handle: OpenSourceFile? = state.withLock { s in
            guard s.entries[id] != nil else { return nil }
            s.unlink(id)
            return s.entries.removeValue(forKey: id)?.handle
        }
        _ = handle
    }

    /// The ids from most to least recently used (for tests).
    var order: [Int] {
        state.withLock { s in
            var ids: [Int] = []
            var next = s.newest
            while let id = next {
                ids.append(id)
                next = s.entries[id]!.older
            }
            return ids
        }
    }
}
