#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex, for state that worker threads share.
///
/// Swift's `Mutex` would do the same, but its fast path is an atomic in the
/// toolchain's Synchronization module, which is not built for
/// ThreadSanitizer: under `swift test --sanitize=thread` (CI) every access
/// from two threads, though locked, was reported as a race. TSan intercepts
/// pthread mutexes, so it sees these locks.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
