import Dispatch

/// Recipe files made most recently by one reader (a mount), kept for the
/// reads that follow: a mount is asked for a file once per request (1 MiB),
/// and an optimizer file of a few hundred tensors takes a fraction of a
/// millisecond to make. Bounded by `capacity` files and `byteBudget` bytes
/// of extents and framing, whatever the plan's size; keyed by whatever
/// names a file to its owner (a mount's inode).
public final class MadeFiles<Key: Hashable & Sendable>: Sendable {
    private struct Entry {
        let file: VirtualFile
        let cost: Int
        var lastUse: UInt64
    }

    /// A file one reader is making, which the others wait for: a file
    /// read by several FUSE threads at once (readahead) was made by each,
    /// a 64-shard `.distcp` file's extents several times over.
    private final class Making: Sendable {
        let done = DispatchSemaphore(value: 0)
        let file = Locked<VirtualFile?>(nil)
    }

    private enum Step {
        case found(VirtualFile)
        case wait(Making)
        case make(Making)
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var making: [Key: Making] = [:]
        var clock: UInt64 = 0
        var total = 0
    }

    /// Evicted bytes from which the freed pages are given back.
    static var releaseAfter: Int { 1 << 20 }

    public let capacity: Int
    public let byteBudget: Int
    private let state = Locked(State())

    public init(capacity: Int, byteBudget: Int = .max) {
        self.capacity = max(1, capacity)
        self.byteBudget = byteBudget
    }

    /// The file `key` names, made by `planned` unless it is held: a file made
    /// at planning is returned as it is and never held.
    public func file(_ key: Key, _ planned: PlannedFile) -> VirtualFile {
        guard planned.isRecipe else { return planned.make() }
        let step: Step = state.withLock { s in
            if s.entries[key] != nil {
                s.clock += 1
                s.entries[key]!.lastUse = s.clock
                return .found(s.entries[key]!.file)
            }
            if let making = s.making[key] { return .wait(making) }
            let making = Making()
            s.making[key] = making
            return .make(making)
        }
        let making: Making
        switch step {
        case let .found(file):
            return file
        case let .wait(other):
            other.done.wait()
            other.done.signal()  // for the next waiter
            return other.file.withLock { $0 } ?? planned.make()
        case let .make(mine):
            making = mine
        }
        // Made outside the lock: readers of other files do not wait on it.
        let file = planned.make()
        let cost = file.memoryCost
        making.file.withLock { $0 = file }
        defer { making.done.signal() }
        let evicted: Int = state.withLock { s in
            var evicted = 0
            s.clock += 1
            s.making[key] = nil
            s.total += cost
            s.entries[key] = Entry(file: file, cost: cost, lastUse: s.clock)
            // The oldest go first; the newest stays even alone over the
            // budget: its reader needs it. Eviction scans at most `capacity`
            // entries, and only when one is added.
            while s.entries.count > capacity || (s.total > byteBudget && s.entries.count > 1) {
                guard let oldest = s.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) else { break }
                s.total -= oldest.value.cost
                evicted += oldest.value.cost
                s.entries[oldest.key] = nil
            }
            return evicted
        }
        // A made file is thousands of small blocks, freed between those
        // others keep: their pages go back to the system with it (a mount
        // reading every 64-shard `.distcp` file grew by 55 MB without).
        if evicted >= MadeFiles.releaseAfter { MallocArenas.releaseFree() }
        return file
    }

    /// Files held now (for tests).
    public var count: Int { state.withLock { $0.entries.count } }
}
