import Foundation

/// Runs numbered work items on a few threads of their own: each thread takes
/// the next item number until none is left, or until an item fails or the
/// caller cancels. Every front end that works on many files at once
/// (convert, verify, the materialiser, opening an NxD tag) uses this one;
/// the services that run for as long as a mount (the prefetcher's workers,
/// the materialiser's and the source watcher's threads) start theirs
/// through `Threads`, the same threads.
///
/// Threads rather than Dispatch's pool: items block on storage (pread,
/// fsync) for milliseconds, and a worker's state (a writer with its buffers,
/// about 10 MiB) lives for the whole run.
public enum WorkerPool {
    /// Most worker threads a pool runs, whatever is asked: enough to keep
    /// the storage of any node busy, with each worker's buffers (about
    /// 10 MiB) far below the 256 MB a ShardFS process may use.
    public static let maximumWorkers = 64

    /// Calls `body(&state, item)` for every item in `0..<count`, on
    /// `workers` threads (at most `count`, at most `maximumWorkers`), each
    /// with its own `state` made by `makeState` on that thread. Items are
    /// handed out in order. After an item throws, no further item starts
    /// and, once all threads are done, the error of the lowest item that
    /// threw is thrown: every lower item had started, so the same inputs
    /// always give the same message, whichever thread was quicker.
    /// `finish` is called on each thread with its state when it is done.
    public static func run<State>(
        items count: Int, workers: Int,
        isCancelled: @escaping @Sendable () -> Bool = { false },
        makeState: @escaping @Sendable () -> State,
        finish: @escaping @Sendable (inout State) -> Void = { _ in },
        _ body: @escaping @Sendable (inout State, Int) throws(ShardFSError) -> Void
    ) throws(ShardFSError) {
        guard count > 0 else { return }
        let shared = Locked(WorkerPoolProgress())
        let threads = Threads()
        threads.start(min(workers, count)) {
            var state = makeState()
            defer { finish(&state) }
            while !isCancelled() {
                let item: Int? = shared.withLock { s in
                    guard s.failure == nil, s.next < count else { return nil }
                    defer { s.next += 1 }
                    return s.next
                }
                guard let item else { return }
                do throws(ShardFSError) {
                    try body(&state, item)
                } catch {
                    shared.withLock { s in
                        if s.failure.map({ item < $0.item }) ?? true { s.failure = (item, error) }
                    }
                    return
                }
            }
        }
        threads.wait()
        if let failure = shared.withLock({ $0.failure }) { throw failure.error }
    }

    /// `body(item)` for every item in `0..<count`, results in item order.
    public static func map<Result: Sendable>(
        items count: Int, workers: Int,
        _ body: @escaping @Sendable (Int) throws(ShardFSError) -> Result
    ) throws(ShardFSError) -> [Result] {
        let results = Locked([Result?](repeating: nil, count: count))
        try run(items: count, workers: workers, makeState: { () }) { (_: inout Void, item: Int) throws(ShardFSError) in
            let result = try body(item)
            results.withLock { $0[item] = result }
        }
        return results.withLock { $0.map { $0! } }
    }

    /// Workers to use for work that is mostly CPU: one per core online.
    public static var cores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Threads of the pool that a caller runs its own loop on: `start` runs
    /// `body` once on each of its new threads, `wait` returns when every
    /// thread started has returned from it. For a service that takes work
    /// from a queue of its own (the prefetcher's workers wait on a
    /// semaphore) or runs in the background for as long as a mount.
    public final class Threads: Sendable {
        private let group = DispatchGroup()

        public init() {}

        /// Starts `count` threads (at least 1, at most `maximumWorkers`),
        /// each running `body` once.
        public func start(_ count: Int, _ body: @escaping @Sendable () -> Void) {
            for _ in 0..<max(1, min(count, WorkerPool.maximumWorkers)) {
                group.enter()
                let thread = Thread { [group] in
                    defer { group.leave() }
                    body()
                }
                thread.stackSize = WorkerPool.stackBytes
                thread.start()
            }
        }

        /// Waits until every thread started has returned.
        public func wait() { group.wait() }
    }

    /// Each thread's stack (a thread would reserve 8 MiB by default).
    static let stackBytes = 1 << 20
}

/// What a pool's threads share: the next item, and the failure of the
/// lowest item that failed.
private struct WorkerPoolProgress {
    var next = 0
    var failure: (item: Int, error: ShardFSError)?
}
