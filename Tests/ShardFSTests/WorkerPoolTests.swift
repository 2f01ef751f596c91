import Foundation
import Testing
@testable import ShardFS

/// The one worker pool every front end uses: every item once, state per
/// thread, the first failure stops the hand-out and is rethrown, and the
/// thread count is bounded whatever is asked.
@Suite struct WorkerPoolTests {
    @Test func everyItemOnceWithStatePerThread() throws {
        let seen = Locked([Int](repeating: 0, count: 1000))
        let states = Locked(Set<ObjectIdentifier>())
        final class State {}
        try WorkerPool.run(items: 1000, workers: 4, makeState: { State() }) { (state: inout State, item: Int) throws(ShardFSError) in
            seen.withLock { $0[item] += 1 }
            states.withLock { _ = $0.insert(ObjectIdentifier(state)) }
        }
        #expect(seen.withLock { $0 } == [Int](repeating: 1, count: 1000))
        #expect((1...4).contains(states.withLock { $0.count }))
    }

    @Test func theFirstFailureStopsTheHandOut() {
        // One worker: items 0...5 run, 5 fails, nothing more is handed out.
        let started = Locked(0)
        let error = #expect(throws: ShardFSError.self) {
            try WorkerPool.run(items: 10_000, workers: 1, makeState: { () }) { (_: inout Void, item: Int) throws(ShardFSError) in
                started.withLock { $0 += 1 }
                if item == 5 { throw ShardFSError.badSource(file: "item-5", reason: "failed") }
            }
        }
        #expect(error == .badSource(file: "item-5", reason: "failed"))
        #expect(started.withLock { $0 } == 6)
        // Several workers: the first error is the one thrown, whichever finishes last.
        let many = #expect(throws: ShardFSError.self) {
            try WorkerPool.run(items: 1000, workers: 4, makeState: { () }) { (_: inout Void, item: Int) throws(ShardFSError) in
                if item % 100 == 99 { throw ShardFSError.badSource(file: "item", reason: "failed") }
            }
        }
        #expect(many == .badSource(file: "item", reason: "failed"))
    }

    @Test func theLowestFailingItemIsReportedWhateverFailsFirst() {
        // Item 1 fails at once; item 0 fails only after item 1 has failed:
        // item 0's error is the one thrown, so a message never depends on
        // which thread was quicker (several bad files: the first named).
        let oneFailed = DispatchSemaphore(value: 0)
        let error = #expect(throws: ShardFSError.self) {
            try WorkerPool.run(items: 2, workers: 2, makeState: { () }) { (_: inout Void, item: Int) throws(ShardFSError) in
                if item == 1 {
                    oneFailed.signal()
                    throw ShardFSError.badSource(file: "item-1", reason: "failed")
                }
                oneFailed.wait()
                throw ShardFSError.badSource(file: "item-0", reason: "failed")
            }
        }
        #expect(error == .badSource(file: "item-0", reason: "failed"))
    }

    @Test func mapKeepsItemOrderAndBoundsThreads() throws {
        let threads = Locked(Set<UInt64>())
        let squares = try WorkerPool.map(items: 300, workers: 10_000) { (item: Int) throws(ShardFSError) -> Int in
            let id = UInt64(pthread_self())
            threads.withLock { _ = $0.insert(id) }
            return item * item
        }
        #expect(squares == (0..<300).map { $0 * $0 })
        #expect(threads.withLock { $0.count } <= WorkerPool.maximumWorkers)
    }

    @Test func cancellationStopsBeforeTheNextItem() throws {
        let done = Locked(0)
        try WorkerPool.run(items: 100, workers: 1, isCancelled: { done.withLock { $0 } >= 3 }, makeState: { () }) {
            (_: inout Void, _: Int) throws(ShardFSError) in done.withLock { $0 += 1 }
        }
        #expect(done.withLock { $0 } == 3)
    }

    /// A service's threads (the prefetcher's workers): each runs the loop
    /// once, on a thread of its own, and `wait` returns only when every one
    /// has returned.
    @Test func serviceThreadsRunTheLoopAndAreWaitedFor() {
        let threads = WorkerPool.Threads()
        let release = DispatchSemaphore(value: 0)
        let running = Locked(Set<UInt64>()), returned = Locked(0)
        threads.start(3) {
            running.withLock { _ = $0.insert(UInt64(pthread_self())) }
            release.wait()
            returned.withLock { $0 += 1 }
        }
        let waited = Locked(false)
        let waiter = WorkerPool.Threads()
        waiter.start(1) {
            threads.wait()
            waited.withLock { $0 = true }
        }
        #expect(PrefetcherTests.eventually { running.withLock { $0.count } == 3 })
        release.signal()
        release.signal()
        // Two of three returned: `wait` still waits.
        #expect(PrefetcherTests.eventually { returned.withLock { $0 } == 2 })
        usleep(20_000)
        #expect(!waited.withLock { $0 })
        release.signal()
        waiter.wait()
        #expect(waited.withLock { $0 } && returned.withLock { $0 } == 3)
        // Bounded like `run`, whatever is asked.
        let many = WorkerPool.Threads(), count = Locked(0)
        many.start(10_000) { count.withLock { $0 += 1 } }
        many.wait()
        #expect(count.withLock { $0 } == WorkerPool.maximumWorkers)
    }
}
