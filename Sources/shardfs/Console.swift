import ArgumentParser
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// Writes to the terminal's file descriptors directly: `stderr` the C global
/// is not concurrency-safe in Swift 6, and progress comes from worker threads.
enum Console {
    static func write(_ text: String, fd: Int32) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n <= 0 { return }
            offset += n
        }
    }

    static func out(_ line: String) { write(line + "\n", fd: 1) }
    static func error(_ line: String) { write(line + "\n", fd: 2) }

    static var stderrIsTerminal: Bool { isatty(2) == 1 }
}

/// Runs `body`, turning a ShardFS error into a message and exit status 1.
func reportingErrors<T>(_ body: () throws(ShardFSError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        Console.error("shardfs: error: \(error)")
        throw ExitCode.failure
    }
}

