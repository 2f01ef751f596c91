#if canImport(Glibc)
import Glibc
#endif

/// The monotonic clock (never set back, unlike the wall clock), the one
/// that progress, pacing, sweeps and the read-quiet test are timed by.
public enum Monotonic {
    /// Nanoseconds since an arbitrary point (the boot).
    public static var nanoseconds: Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec * 1_000_000_000 + t.tv_nsec
    }

    /// Seconds since the same point.
    public static var seconds: Double { Double(nanoseconds) / 1e9 }
}
