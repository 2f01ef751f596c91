import CLinux
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Notices source files that change while mounted. A rank file is only as
/// good as the bytes it is cut from: once a source's size, mtime, inode or
/// contents differ from what was planned against, every file that uses it
/// must fail with EIO rather than serve stale or mixed bytes.
///
/// Four ways, from cheapest to widest:
/// - a source read under a lease (`ReadLeases`) is marked the moment another
///   process opens it for writing, before that writer may write;
/// - every read checks the unleased sources it copied from, after copying
///   (`check`: an fstat of the open descriptor);
/// - inotify on the sources' directories reports a write, rename or removal
///   made on this node as it happens (one watch per directory);
/// - a sweep stats the paths of a share of the sources each tick, all of
///   them every `sweepSeconds` at most, for what inotify cannot see (another
///   node writing a network file system). With 60,000 sources that is 2,000
///   stats a second, where polling every path five times a second cost 12%
///   of a core at 16,000.
public final class SourceWatch: ReadLeases.Observer {
    public let sources: [SourceFile]
    private let broken: Locked<[Int: String]>
    /// How many sources `broken` holds. An `Atomic`, not in `broken`'s lock:
    /// every read a mount serves asks `problem` of each source it copied
    /// from, on every FUSE thread at once, and while nothing is broken (all
    /// but always) this lock-free load answers without a lock they would
    /// all meet at.
    private let brokenCount = Atomic<Int>(0)
    /// Broken sources whose files' cached pages have been dropped.
    private let announced = Locked(Set<Int>())
    private let watcher = Locked(Watcher())
    /// An eventfd `wake` signals to end a wait early.
    private let wakeEvent: Int32

    /// A full sweep takes at most this long (and a tick stats at least
    /// `minimumSweepPerTick` paths, so small mounts are swept faster).
    public static let sweepSeconds = 30
    static let minimumSweepPerTick = 200

    /// The state of the thread that calls `tick`.
    private struct Watcher {
        var events: DirectoryEvents?
        var started = false
        /// Per inotify watch, its sources by entry name: the first source of
        /// that name, any others in `alsoNamed` (a name two sources share,
        /// as links of the Hugging Face cache can). One number per source,
        /// not a list: a 70B-count xser tag is 350,000 sources.
        var sourcesByWatch: [Int32: [String: Int]] = [:]
        var alsoNamed: [Int: [Int]] = [:]
        /// The next source the sweep stats.
        var cursor = 0
        var lastSweep = 0.0
        /// Directories inotify could not watch (its limit reached): only the sweep covers them.
        var unwatched = 0
    }

    /// Seconds between two shares of the sweep.
    private let sweepInterval: Double
    /// Whether inotify is used at all (tests of the sweep alone turn it off).
    private let useEvents: Bool

    public init(sources: [SourceFile], sweepInterval: Double = 1, events: Bool = true) {
        self.sources = sources
        self.sweepInterval = sweepInterval
        useEvents = events
        broken = Locked([:])
        wakeEvent = shardfs_wake_event()
        ReadLeases.shared?.observe(self)
    }

    deinit {
        if wakeEvent >= 0 { close(wakeEvent) }
    }

    /// Why source `index` is unusable, or nil while it is intact (as far as
    /// anything has found).
    public func problem(_ index: Int) -> String? {
        guard brokenCount.load(ordering: .acquiring) > 0 else { return nil }
        return broken.withLock { $0[index] }
    }

    /// Whether any source is known to have changed.
    public var anyBroken: Bool { brokenCount.load(ordering: .acquiring) > 0 }

    /// Checks source `index` now: an fstat of its open descriptor (a change
    /// in place), or a stat of its path when it is not open. A read calls it
    /// for every source it copied from, after copying: any write that
    /// reached those bytes before the copy ended changed the mtime first.
    public func check(_ index: Int) -> String? {
        if let known = problem(index) { return known }
        guard let change = sources[index].change() else { return nil }
        return markBroken(index, change)
    }

    /// Stats every source's path (catching a file deleted or replaced by a
    /// rename, which an open descriptor cannot see). Returns the indexes
    /// that became broken on this call.
    public func checkPaths() -> [Int] {
        sources.indices.filter { checkPath($0) }
    }

    /// One round of the watcher: waits up to `milliseconds` for change events
    /// (or `wake`), checks the sources they name, and stats the sweep's next
    /// share of paths when a second has passed since the last. Call it from
    /// one thread.
    public func tick(milliseconds: Int32) {
        let inotify: DirectoryEvents? = watcher.withLock { w in
            if !w.started { start(&w) }
            return w.events
        }
        let batch: DirectoryEvents.Batch
        if let inotify {
            batch = inotify.wait(milliseconds: milliseconds, wake: wakeEvent)
        } else {
            var fds = [pollfd(fd: wakeEvent, events: Int16(POLLIN), revents: 0)]
            _ = poll(&fds, 1, milliseconds)
            batch = .events([])
        }
        drainWake()
        switch batch {
        case .overflow:
            _ = checkPaths()
        case let .events(events):
            for event in events { handle(event) }
        }
        let now = Monotonic.seconds
        let share: Range<Int>? = watcher.withLock { w in
            guard now - w.lastSweep >= sweepInterval, !sources.isEmpty else { return nil }
            w.lastSweep = now
            let count = min(sources.count, max(SourceWatch.minimumSweepPerTick, (sources.count + SourceWatch.sweepSeconds - 1) / SourceWatch.sweepSeconds))
            let start = w.cursor
            w.cursor = (w.cursor + count) % sources.count
            return start..<start + count
        }
        if let share {
            for position in share { _ = checkPath(position % sources.count) }
        }
    }

    /// Ends a `tick` that is waiting.
    public func wake() {
        var one: UInt64 = 1
        _ = write(wakeEvent, &one, 8)
    }

    /// Sources found broken (by a read, an event or the sweep) that have not
    /// yet been returned here: the caller drops their files' cached pages once.
    public func takeNewlyBroken() -> [Int] {
        guard anyBroken else { return [] }
        let brokenNow = broken.withLock { $0.keys.sorted() }
        return announced.withLock { done in
            let fresh = brokenNow.filter { !done.contains($0) }
            done.formUnion(fresh)
            return fresh
        }
    }

    /// How many directories are watched by inotify, and how many could not be.
    public var watchedDirectories: (watched: Int, unwatched: Int) {
        watcher.withLock { ($0.sourcesByWatch.count, $0.unwatched) }
    }

    /// Whether source `index` became broken now (by its path).
    private func checkPath(_ index: Int) -> Bool {
        guard problem(index) == nil, let change = sources[index].pathChange() else { return false }
        markBroken(index, change)
        return true
    }

    private func handle(_ event: DirectoryEvents.Event) {
        let indexes: [Int] = watcher.withLock { w in
            guard let byName = w.sourcesByWatch[event.directory] else { return [] }
            let first: [Int] = event.isDirectoryGone ? Array(byName.values) : byName[event.name].map { [$0] } ?? []
            return first.flatMap { [$0] + (w.alsoNamed[$0] ?? []) }
        }
        for index in indexes where problem(index) == nil {
            // A write may keep size and (within a clock tick) mtime: it is a change all the same.
            if event.isWrite {
                markBroken(index, "written to")
            } else {
                _ = checkPath(index)
            }
        }
    }

    /// Watches the directory of every source (where a source is a symlink,
    /// as in the Hugging Face hub cache, the directory of its target: events
    /// name the entry that changed).
    private func start(_ w: inout Watcher) {
        w.started = true
        w.lastSweep = Monotonic.seconds
        guard useEvents, let events = DirectoryEvents() else { return }
        var byDirectory: [String: [String: Int]] = [:]
        // Sources come folder by folder (an xser file's tensor files): one
        // string per folder, not per source.
        var directory = ""
        for (index, source) in sources.enumerated() {
            var path = source.path
            var info = stat()
            if lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK, let resolved = realpath(path, nil) {
                path = String(cString: resolved)
                free(resolved)
            }
            let slash = path.lastIndex(of: "/")
            let folder = slash.map { path[..<$0] } ?? "."
            if folder != directory[...] { directory = String(folder) }
            let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
            let key = directory.isEmpty ? "/" : directory
            if let first = byDirectory[key, default: [:]][name] {
                w.alsoNamed[first, default: []].append(index)
            } else {
                byDirectory[key, default: [:]][name] = index
            }
        }
        for (directory, names) in byDirectory {
            let watch = events.watch(directory)
            if watch >= 0 {
                // Two directories may be one watch (a link): their names join.
                var joined: [(Int, Int)] = []
                w.sourcesByWatch[watch, default: [:]].merge(names) { first, other in
                    joined.append((first, other))
                    return first
                }
                for (first, other) in joined { w.alsoNamed[first, default: []].append(other) }
            } else {
                w.unwatched += 1
            }
        }
        w.events = events
    }

    private func drainWake() {
        var count: UInt64 = 0
        _ = read(wakeEvent, &count, 8)
    }

    @discardableResult
    private func markBroken(_ index: Int, _ reason: String) -> String {
        broken.withLock { state in
            if let known = state[index] { return known }
            state[index] = reason
            brokenCount.add(1, ordering: .releasing)
            return reason
        }
    }

    /// A leased source is being opened for writing (or truncated): broken
    /// from now on. Called on the leases' thread, before the writer may write.
    public func leaseBroken(path: String, identity: SourceIdentity) {
        // Rare: a scan is cheaper than an index of every source kept for it.
        var found = false
        for index in sources.indices where sources[index].identity == identity && sources[index].path == path {
            markBroken(index, OpenSourceFile.leaseBreak)
            found = true
        }
        if found { wake() }
    }
}
