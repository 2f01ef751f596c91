import ArgumentParser
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// Starts `shardfs` again as a background daemon and waits until it says the
/// mount is ready (or why it failed). A fresh exec, not fork: forking a
/// multithreaded Swift process is unsafe.
///
/// The daemon talks back on its fd 3, a line at a time: `note TEXT` (shown
/// to the user as it comes), then `ready WHAT` (what it serves) or the
/// error that stopped it.
enum Daemon {
    /// `logFD` (open on `logFile`, closed here) becomes the daemon's stdout
    /// and stderr. Returns what the daemon said it serves.
    static func start(arguments: [String], logFile: String, logFD: Int32) throws -> String {
        defer { close(logFD) }
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { throw failure("pipe failed: \(ShardFSError.describe(errno: errno))") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // In this order: the log first, as it may itself be fd 3 (the first
        // descriptor the parent opens); then the pipe's write end onto 3 (the
        // read end may be fd 3 as well, so it is closed first).
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 3)
        if pipeFDs[1] != 3 { posix_spawn_file_actions_addclose(&actions, pipeFDs[1]) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let argv: [UnsafeMutablePointer<CChar>?] = (["shardfs"] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, "/proc/self/exe", &actions, nil, argv, environ)
        close(pipeFDs[1])
        defer { close(pipeFDs[0]) }
        guard status == 0 else { throw failure("cannot start the daemon: \(ShardFSError.describe(errno: status))") }

        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var last = ""
        reading: while true {
            let n = chunk.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending += chunk[0..<n]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                if line.hasPrefix("note ") {
                    Console.error(String(line.dropFirst(5)))
                    continue
                }
                last = line
                break reading
            }
        }
        if last.isEmpty { last = String(decoding: pending, as: UTF8.self).trimmingSuffix() }
        if last.hasPrefix("ready") { return String(last.dropFirst(6)) }
        var exitStatus: Int32 = 0
        waitpid(pid, &exitStatus, 0)
        throw failure(last.isEmpty ? "the daemon exited before mounting; see \(logFile)" : "\(last) (log: \(logFile))")
    }

    /// In the daemon: passes a note on to the waiting parent.
    static func relay(_ note: String, fd: Int32) {
        Console.write("note " + note.replacingOccurrences(of: "\n", with: " ") + "\n", fd: fd)
    }

    /// In the daemon: the mount is up, serving `what`.
    static func ready(_ what: String, fd: Int32) {
        Console.write("ready " + what + "\n", fd: fd)
    }

    private static func failure(_ message: String) -> ExitCode {
        Console.error("shardfs: error: \(message)")
        return ExitCode.failure
    }
}

extension String {
    func trimmingSuffix() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
