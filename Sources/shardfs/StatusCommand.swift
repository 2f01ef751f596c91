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

    func run() throws {
        let mountpoint = MountTable.absolute(self.mountpoint)
        guard MountTable.entries().contains(where: { $0.mountPoint == mountpoint && $0.fileSystemType == "fuse.shardfs" }) else {
            Console.error("shardfs: error: \(mountpoint) is not a ShardFS mount (see /proc/mounts)")
            throw ExitCode.failure
        }
        let path = mountpoint + "/" + MountStatus.fileName
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            let hint = code == ENOTCONN ? ": its daemon is gone; `shardfs unmount \(mountpoint)` clears it" : ""
            Console.error("shardfs: error: \(path): \(String(cString: strerror(code)))\(hint)")
            throw ExitCode.failure
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else {
                Console.error("shardfs: error: \(path): read failed: \(String(cString: strerror(errno)))")
                throw ExitCode.failure
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        if json {
            Console.out(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .newlines))
            return
        }
        guard let status = try? JSONDecoder().decode(MountStatus.self, from: Data(bytes)) else {
            Console.error("shardfs: error: \(path): the daemon's status is not readable (a different shardfs version?)")
            throw ExitCode.failure
        }
        Console.out("""
            \(status.mountpoint): \(status.files) files (\(MaterialiserStatus.bytes(status.bytes))) of \(status.source), \(status.layout)
            daemon pid \(status.pid): \(status.readsServed) reads served, \(MaterialiserStatus.bytes(status.bytesServed))
            """)
        if let log = status.log { Console.out("log: \(log)") }
        if let persist = status.persist {
            Console.out("persist to \(persist.directory) (part \(persist.part)): \(persist.summary)")
            Console.out("files served from \(persist.directory): \(persist.filesServedFromDirectory)")
        } else {
            Console.out("persist: off (mount with --persist-to DIR to write the files to real storage)")
        }
    }
}
