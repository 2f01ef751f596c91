#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex, for state that threads share: the one
/// lock of ShardFS, the engine's and the command line's.
///
/// Swift's `Mutex` would do the same, but its fast path is an atomic in the
/// toolchain's Synchronization module, which is not built for
/// ThreadSanitizer: under `swift test --sanitize=thread` (CI) every access
/// from two threads, though locked, was reported as a race. TSan intercepts
/// pthread mutexes, so it sees these locks.
///
/// `Atomic` is left for what a lock cannot serve, each use saying why: a
/// flag read in a signal handler (a lock there can deadlock the thread it
/// interrupted), and counters touched by every read a mount serves, on every
/// FUSE thread at once (one lock would be the place they all meet).
public final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
