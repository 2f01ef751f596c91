import Dispatch
import Foundation

/// Where a prefetch asks storage for bytes: a source range, or a range of a
/// persisted copy that now answers a file's reads.
public enum PrefetchTarget: Equatable, Sendable {
    case source(SourceRange)
    /// Bytes of the persisted copy that answers `inode`'s reads.
    case persisted(inode: UInt64, offset: Int, count: Int)
}

/// Keeps storage busy ahead of the readers.
///
/// A rank file's bytes come from source ranges the plan knows long before a
/// reader asks for them. Served on demand from cold storage, a narrow column
/// cut costs a synchronous 4 KiB page fault per source row: the daemon waits
/// on storage one page at a time. Here every open file has a window ahead of
/// its reader whose source ranges are read into the page cache by worker
/// threads in large pieces (`SourceFile.prefetch`), so reads find their pages
/// arrived or in flight. Like the kernel's readahead, the window starts small
/// (`initialWindow`) at an open, closes at a jump, and opens again and
/// doubles with every read that continues where the last one ended, up to
/// `window`: a reader jumping about (a column cut's few bytes ahead can be
/// tens of MiB of source span) does not make storage read what it never asks for.
///
/// Bounded by construction: the data lands in the kernel's page cache, not
/// in this process; the state is one small record per open file plus a bit
/// per 64 KiB of source; a file's prefetch stops when its last reader closes
/// it. Advice is only advice: correctness never depends on it (a source that
/// changes or fails is found by the read that needs the bytes).
public final class Prefetcher: Sendable {
    public struct Options: Sendable {
        /// File bytes kept requested ahead of a sequential reader, at most.
        public var window = 64 << 20
        /// The window at an open, or once a reader goes on after a jump.
        public var initialWindow = 2 << 20
        /// Threads reading ahead. Each waits for its piece (a few MiB in
        /// flight per thread), so several keep storage busy: on the 1B TP=32
        /// cold load 6 loaded 2.4x as fast as 2.
        public var workers = 6

        public init() {}
    }

    /// A worker takes this many bytes of a file's pending range at a time.
    static let fileBytesPerPiece = 4 << 20
    /// Source ranges are handed over in pieces of at most this many bytes,
    /// and a closed file's work stops between pieces (a column cut's span
    /// is many times its bytes in the file).
    static let pieceBytes = 8 << 20
    /// Granularity of the record of source bytes already requested: sibling
    /// ranks need the same spans, and storage need not hear of them twice.
    static let granule = 64 << 10

    /// What a file's reader has had requested ahead of it.
    private struct Stream {
        var opens: Int
        let generation: Int
        /// File bytes whose sources have been requested (or are queued).
        var covered: Range<Int>
        /// Queued and not yet handed to storage.
        var pending: Range<Int>?
        var queued = false
        /// Where the reader last read, and where that read ended.
        var position = 0
        var lastEnd = 0
        /// The current window (doubles with sequential reads).
        var window: Int
    }

    private struct State {
        var streams: [UInt64: Stream] = [:]
        var queue: [UInt64] = []
        var nextGeneration = 1
        var stopped = false
        /// Per directory, the position (in listing order) up to which files
        /// have been requested ahead of being opened.
        var lookahead: [UInt64: Int] = [:]
        /// Per directory, the position of the file opened last.
        var lastOpened: [UInt64: Int] = [:]
        /// Workers handing a piece over right now.
        var busy = 0
    }

    public let options: Options
    private let tree: FileTree
    private let state = Locked(State())
    private let wake = DispatchSemaphore(value: 0)
    /// The workers, threads of `WorkerPool`.
    private let threads = WorkerPool.Threads()
    /// Per source, a bit per granule already requested: one array for every
    /// source, source s's words from `firstWord[s]` to `firstWord[s + 1]` (a
    /// 70B-count xser tag is 350,000 files of a few KB: an array each took
    /// 14 MB).
    private let requested: Locked<[UInt64]>
    private let firstWord: [Int]
    private let targets: @Sendable (_ inode: UInt64, _ range: Range<Int>) -> [PrefetchTarget]
    private let advise: @Sendable (PrefetchTarget) -> Void

    /// `targets` says which storage ranges hold a file's bytes `range`;
    /// `advise` asks storage for one of them without waiting.
    public init(tree: FileTree, sourceSizes: [Int], options: Options = Options(),
                targets: @escaping @Sendable (_ inode: UInt64, _ range: Range<Int>) -> [PrefetchTarget],
                advise: @escaping @Sendable (PrefetchTarget) -> Void) {
        self.tree = tree
        self.options = options
        self.targets = targets
        self.advise = advise
        var firstWord = [0]
        firstWord.reserveCapacity(sourceSizes.count + 1)
        for size in sourceSizes { firstWord.append(firstWord[firstWord.count - 1] + (size / Prefetcher.granule + 64) / 64) }
        self.firstWord = firstWord
        requested = Locked([UInt64](repeating: 0, count: firstWord[firstWord.count - 1]))
        threads.start(workerCount) { [self] in
            while work() {}
        }
    }

    /// Ends the workers (queued work is dropped) and waits for them.
    public func stop() {
        let alreadyStopped = state.withLock { s in
            defer { s.stopped = true; s.queue = []; s.streams = [:] }
            return s.stopped
        }
        guard !alreadyStopped else { return }
        for _ in 0..<workerCount { wake.signal() }
        threads.wait()
    }

    /// Worker threads running (`options.workers`, within the pool's bounds).
    private var workerCount: Int { max(1, min(options.workers, WorkerPool.maximumWorkers)) }

    /// Files with a reader (the tests watch these counts).
    public var openFiles: Int { state.withLock { s in s.streams.values.filter { $0.opens > 0 }.count } }
    /// Files with work queued or in hand.
    public var streamCount: Int { state.withLock { $0.streams.count } }
    /// Files waiting for a worker.
    public var queuedCount: Int { state.withLock { $0.queue.count } }

    /// Waits until nothing is queued and no worker is handing anything over
    /// (or `seconds` pass; false then): from then on, no request is made
    /// until a reader opens or reads a file. Tests use it to know that
    /// "nothing more was asked for" without guessing how long to sleep.
    public func waitUntilIdle(seconds: Double = 10) -> Bool {
        let deadline = DispatchTime.now() + seconds
        while DispatchTime.now() < deadline {
            if state.withLock({ $0.queue.isEmpty && $0.busy == 0 }) { return true }
            usleep(1_000)
        }
        return false
    }

    /// A reader opened `inode`: its first window is requested at once. When
    /// the file is smaller than a window and follows the one opened before it
    /// in its directory (xser's tensor files are read one after another), the
    /// files after it are requested too. Rank files opened side by side by
    /// different ranks skip siblings, so they never pull in each other's.
    public func opened(_ inode: UInt64) {
        guard let node = tree.node(inode), case let .file(file) = node.kind else { return }
        state.withLock { s in
            guard !s.stopped else { return }
            if s.streams[inode] != nil {
                s.streams[inode]!.opens += 1
            } else {
                s.streams[inode] = Stream(opens: 1, generation: s.nextGeneration, covered: 0..<0,
                                          window: min(options.initialWindow, options.window))
                s.nextGeneration += 1
            }
            advance(&s, inode, readEnd: 0, size: file.size)
            lookAhead(&s, after: node, budget: options.window - file.size)
        }
    }

    /// The last reader of `inode` may have closed it: then its prefetch stops.
    public func closed(_ inode: UInt64) {
        state.withLock { s in
            guard var stream = s.streams[inode] else { return }
            stream.opens -= 1
            if stream.opens <= 0 {
                s.streams[inode] = nil
                s.queue.removeAll { $0 == inode }
            } else {
                s.streams[inode] = stream
            }
        }
    }

    /// A reader asked for `count` bytes at `offset`: keep a window ahead of it.
    public func read(_ inode: UInt64, offset: Int, count: Int) {
        guard let node = tree.node(inode), case let .file(file) = node.kind else { return }
        state.withLock { s in
            guard var stream = s.streams[inode], stream.opens > 0 else { return }
            if offset == stream.lastEnd {
                stream.window = min(options.window, max(options.initialWindow, stream.window * 2))
            } else if offset < stream.covered.lowerBound || offset > stream.covered.upperBound {
                // A jump: what was queued for the old position is not wanted,
                // and nothing is read ahead until the reader goes on from here.
                stream.covered = offset..<offset
                stream.pending = nil
                stream.window = 0
            }
            stream.position = offset
            stream.lastEnd = offset + count
            s.streams[inode] = stream
            advance(&s, inode, readEnd: min(file.size, offset + count), size: file.size)
        }
    }

    /// Queues what the window past `readEnd` adds to what is covered; in
    /// steps of a quarter window, so a reader of small requests does not
    /// queue work per request.
    private func advance(_ s: inout State, _ inode: UInt64, readEnd: Int, size: Int) {
        guard var stream = s.streams[inode] else { return }
        let wanted = min(size, readEnd + stream.window)
        let from = stream.covered.upperBound
        guard stream.window > 0, wanted > from, wanted - from >= stream.window / 4 || wanted == size else { return }
        stream.pending = (stream.pending?.lowerBound ?? from)..<wanted
        stream.covered = stream.covered.lowerBound..<wanted
        if !stream.queued {
            stream.queued = true
            s.queue.append(inode)
            wake.signal()
        }
        s.streams[inode] = stream
    }

    /// When `node` is the file after the one opened last in its directory,
    /// queues whole files following it, up to `budget` bytes, each once.
    private func lookAhead(_ s: inout State, after node: FileTree.Node, budget: Int) {
        guard let parent = tree.node(node.parent), case let .directory(children, order) = parent.kind,
              let position = order.firstIndex(of: node.name) else { return }
        let previous = s.lastOpened[parent.inode]
        s.lastOpened[parent.inode] = position
        guard budget > 0, previous == position - 1 else { return }
        var budget = budget
        var index = max(position + 1, s.lookahead[parent.inode] ?? 0)
        while index < order.count, budget > 0, let inode = children[order[index]], let next = tree.node(inode),
              case let .file(file) = next.kind {
            if s.streams[inode] == nil {
                s.streams[inode] = Stream(opens: 0, generation: s.nextGeneration, covered: 0..<file.size,
                                          pending: 0..<file.size, queued: true, window: options.window)
                s.nextGeneration += 1
                s.queue.append(inode)
                wake.signal()
            }
            budget -= file.size
            index += 1
        }
        s.lookahead[parent.inode] = max(index, s.lookahead[parent.inode] ?? 0)
    }

    /// Takes the next piece of one queued file's pending range and hands its
    /// storage ranges over; the file goes to the back of the queue while it
    /// has more, so the files read at once all move on together (one file
    /// at a time let a wave's last readers meet cold pages). False once stopped.
    private func work() -> Bool {
        wake.wait()
        let job: (inode: UInt64, generation: Int, piece: Range<Int>)?? = state.withLock { s in
            if s.stopped { return .none }
            guard !s.queue.isEmpty else { return .some(nil) }
            let inode = s.queue.removeFirst()
            guard var stream = s.streams[inode], let pending = stream.pending else { return .some(nil) }
            // What the reader has passed meanwhile is not worth reading ahead.
            let start = min(max(pending.lowerBound, stream.position), pending.upperBound)
            let piece = start..<min(pending.upperBound, start + Prefetcher.fileBytesPerPiece)
            if piece.upperBound < pending.upperBound {
                stream.pending = piece.upperBound..<pending.upperBound
                s.queue.append(inode)
                wake.signal()
            } else {
                stream.pending = nil
                stream.queued = false
            }
            s.streams[inode] = stream
            s.busy += 1
            return .some((inode, stream.generation, piece))
        }
        guard let job else { return false }
        guard let (inode, generation, piece) = job else { return true }
        defer { state.withLock { $0.busy -= 1 } }
        for target in targets(inode, piece) {
            guard hand(target, stillWanted: { alive(inode, generation) }) else { return true }
        }
        // A look-ahead stream nobody opened is done once handed over.
        state.withLock { s in
            if let stream = s.streams[inode], stream.generation == generation, stream.opens <= 0, !stream.queued { s.streams[inode] = nil }
        }
        return true
    }

    private func alive(_ inode: UInt64, _ generation: Int) -> Bool {
        state.withLock { s in !s.stopped && s.streams[inode]?.generation == generation }
    }

    /// Hands `target` to storage in pieces, skipping source granules already
    /// requested; false when the file stopped being wanted meanwhile.
    private func hand(_ target: PrefetchTarget, stillWanted: () -> Bool) -> Bool {
        guard case let .source(range) = target else {
            guard stillWanted() else { return false }
            advise(target)
            return true
        }
        var offset = range.offset
        while offset < range.end {
            guard stillWanted() else { return false }
            let pieceEnd = min(range.end, offset + Prefetcher.pieceBytes)
            let (start, end) = claim(range.fileIndex, from: offset, to: pieceEnd)
            if end > start { advise(.source(SourceRange(fileIndex: range.fileIndex, offset: start, count: end - start))) }
            offset = pieceEnd
        }
        return true
    }

    /// Marks the granules wholly inside [from, to) as requested and returns
    /// the span from the first byte not requested before to the last
    /// (granules requested before inside it are asked for again, which costs
    /// storage nothing; partly covered granules at the ends are never marked,
    /// so a neighbour's other part is still asked for); an empty span when
    /// everything was requested before.
    private func claim(_ source: Int, from: Int, to: Int) -> (Int, Int) {
        let granule = Prefetcher.granule
        return requested.withLock { all in
            guard source >= 0, source < firstWord.count - 1 else { return (from, to) }
            let base = firstWord[source], words = firstWord[source + 1] - base
            var first: Int?, last = from
            var index = from / granule
            while index * granule < to {
                let start = max(from, index * granule), end = min(to, (index + 1) * granule)
                let word = index / 64, bit = UInt64(1) << UInt64(index % 64)
                var wanted = true
                if end - start == granule, word < words {
                    wanted = all[base + word] & bit == 0
                    all[base + word] |= bit
                }
                if wanted {
                    if first == nil { first = start }
                    last = end
                }
                index += 1
            }
            guard let first else { return (to, to) }
            return (first, last)
        }
    }
}
