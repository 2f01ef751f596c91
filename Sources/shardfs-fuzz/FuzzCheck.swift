#if canImport(Glibc)
import Glibc
#endif

/// Fails the run (libFuzzer records the input) when an invariant of an
/// accepted input does not hold: acceptance must mean the result is usable.
func invariant(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition {
        printError("shardfs-fuzz: invariant broken: \(message())")
        abort()
    }
}

/// A line on standard error (through the descriptor: Swift 6 forbids the
/// shared `stderr` FILE pointer).
func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
