import ArgumentParser
import Foundation
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what a ShardFS mount serves and how far its --persist-to materialiser has come.",
        discussion: """
            Files done of total, bytes, rate, ETA and the last error; the daemon logs the same.
            The daemon answers from the hidden file MNT/\(MountStatus.fileName), so this works
            from any node that sees the mount. For example:

              shardfs status /mnt/llama3-70b-tp32pp8
              shardfs status /mnt/llama3-70b-tp32pp8 --json | jq .persist.filesDone
            """
    )

    @Argument(help: "The mount point.")
    var mountpoint: String

    @Flag(help: "Print the daemon's status as JSON.")
    var json = false

    @Option(help: ArgumentHelp(
        "Wait up to this many seconds for MNT to be served, then report as usual.",
        discussion: "For a mount started in the background, e.g. by `srun ... shardfs mount ... --foreground &` in a Slurm job: the next step can wait for it with `srun ... shardfs status MNT --wait 120`.",
        valueName: "seconds"))
    var wait: Double?

    func validate() throws {
        if let wait, !(wait >= 0 && wait <= 86_400) { throw ValidationError("--wait must be between 0 and 86400 seconds, not \(wait)") }
    }

    func run() throws {
        let mountpoint = MountTable.absolute(self.mountpoint)
        let deadline = Date().addingTimeInterval(wait ?? 0)
        var bytes: [UInt8] = []
        while true {
            switch Self.readStatus(mountpoint) {
            case .success(let read):
                bytes = read
            case .failure(let problem):
                if Date() < deadline {
                    usleep(200_000)
                    continue
                }
                let waited = wait.map { " (after waiting \(Int($0)) s)" } ?? ""
                Console.error("shardfs: error: \(problem.message)\(waited)")
                throw ExitCode.failure
            }
            break
        }
        let path = mountpoint + "/" + MountStatus.fileName
        if json {
            Console.out(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .newlines))
            return
        }
        guard let status = try? JSONDecoder().decode(MountStatus.self, from: Data(bytes)) else {
            Console.error("shardfs: error: \(path): the daemon's status is not readable (a different shardfs version?)")
            throw ExitCode.failure
        }
        Console.out("""
            \(status.mountpoint): \(status.files) files (\(Units.bytes(status.bytes))) of \(status.source), \(status.layout)
            daemon pid \(status.pid): \(status.readsServed) reads served, \(Units.bytes(status.bytesServed))
            """)
        if let log = status.log { Console.out("log: \(log)") }
        for line in status.sources?.summary ?? [] { Console.out(line) }
        if let persist = status.persist {
            Console.out("persist to \(persist.directory) (part \(persist.part)): \(persist.summary)")
            Console.out("files served from \(persist.directory): \(persist.filesServedFromDirectory)")
        } else {
            Console.out("persist: off (mount with --persist-to DIR to write the files to real storage)")
        }
    }
}

/// Why a mount's status could not be read.
struct StatusProblem: Error {
    let message: String
}

extension StatusCommand {
    /// The daemon's status file, or why it cannot be read now (not a ShardFS
    /// mount yet, or its daemon gone).
    static func readStatus(_ mountpoint: String) -> Result<[UInt8], StatusProblem> {
        guard MountTable.entries().contains(where: { $0.mountPoint == mountpoint && $0.fileSystemType == "fuse.shardfs" }) else {
            return .failure(StatusProblem(message: "\(mountpoint) is not a ShardFS mount (see /proc/mounts)"))
        }
        let path = mountpoint + "/" + MountStatus.fileName
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            let hint = code == ENOTCONN ? ": its daemon is gone; `shardfs unmount \(mountpoint)` clears it" : ""
            return .failure(StatusProblem(message: "\(path): \(ShardFSError.describe(errno: code))\(hint)"))
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else { return .failure(StatusProblem(message: "\(path): read failed: \(ShardFSError.describe(errno: errno))")) }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return .success(bytes)
    }
}
