#if canImport(Glibc)
import Glibc
#endif

/// The mounts the kernel reports (`/proc/self/mountinfo`), and the checks
/// and unmounting built on them.
public enum MountTable {
    public struct Entry: Equatable, Sendable {
        public let mountPoint: String
        public let fileSystemType: String
        /// "major:minor", as /sys/class/bdi names the device.
        public let device: String
    }

    /// The file system type ShardFS mounts carry (`subtype=shardfs`).
    public static let shardFSType = "fuse.shardfs"

    public static func entries(mountinfo: String? = nil) -> [Entry] {
        let text = mountinfo ?? readProcFile("/proc/self/mountinfo")
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            guard fields.count > 6, let separator = fields.firstIndex(of: "-"), separator + 1 < fields.count else { return nil }
            return Entry(mountPoint: unescape(fields[4]), fileSystemType: fields[separator + 1], device: fields[2])
        }
    }

    /// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
               let value = UInt8(String(decoding: utf8[i + 1...i + 3], as: UTF8.self), radix: 8) {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readProcFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            result += chunk[0..<n]
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// `path` made absolute and tidied without touching the file system (a
    /// dead FUSE mount fails every stat with ENOTCONN).
    public static func absolute(_ path: String) -> String {
        var full = path
        if !path.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let cwd = getcwd(&buffer, buffer.count) != nil
                ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/"
            full = cwd + "/" + path
        }
        var parts: [Substring] = []
        for component in full.split(separator: "/") {
            if component == "." { continue }
            if component == ".." { _ = parts.popLast(); continue }
            parts.append(component)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Refuses a mount point that is missing, not a directory, not empty, or
    /// already a mount (a live one, or a dead ShardFS daemon's).
    public static func checkMountPoint(_ path: String) throws(ShardFSError) {
        let full = absolute(path)
        if let existing = entries().last(where: { $0.mountPoint == full }) {
            let hint = existing.fileSystemType == shardFSType ? "; run `shardfs unmount \(path)` first" : ""
            throw ShardFSError.badSource(file: path, reason: "is already a mount point (\(existing.fileSystemType))\(hint)")
        }
        var info = stat()
        guard stat(full, &info) == 0 else {
            let code = errno
            throw ShardFSError.badSource(file: path, reason: code == ENOENT ? "no such directory: create the mount point first" : "cannot be used as a mount point: \(ShardFSError.describe(errno: code))")
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw ShardFSError.badSource(file: path, reason: "is not a directory") }
        guard let directory = opendir(full) else { throw ShardFSError.io(path: path, operation: "opendir", errno: errno) }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." {
                throw ShardFSError.badSource(file: path, reason: "is not empty (holds \(name)); mount onto an empty directory")
            }
        }
    }

    /// Unmounts a ShardFS mount, also one whose daemon died ("Transport
    /// endpoint is not connected"). `lazy` detaches a busy mount.
    public static func unmount(_ path: String, lazy: Bool) throws(ShardFSError) {
        let full = absolute(path)
        guard let entry = entries().last(where: { $0.mountPoint == full }) else {
            throw ShardFSError.badSource(file: path, reason: "is not mounted")
        }
        guard entry.fileSystemType == shardFSType else {
            throw ShardFSError.badSource(file: path, reason: "is a \(entry.fileSystemType) mount, not ShardFS's; not touching it")
        }
        if geteuid() == 0 {
            guard umount2(full, lazy ? Int32(MNT_DETACH) : 0) == 0 else {
                let code = errno
                if code == EBUSY {
                    throw ShardFSError.badSource(file: path, reason: "is busy (files open on it); close them, or use --lazy to detach now")
                }
                throw ShardFSError.io(path: path, operation: "umount", errno: code)
            }
            return
        }
        var arguments = ["fusermount3", "-u"]
        if lazy { arguments.append("-z") }
        arguments.append(full)
        let status = run(arguments)
        if status == 127 {
            throw ShardFSError.badSource(file: path, reason: "cannot unmount as uid \(geteuid()): fusermount3 is not on PATH (install the fuse3 package)")
        }
        guard status == 0 else { throw ShardFSError.badSource(file: path, reason: "fusermount3 -u failed (status \(status))") }
    }

    /// Runs a program from PATH and waits; returns its exit status.
    static func run(_ arguments: [String]) -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawnp(&pid, arguments[0], nil, nil, argv, environ) == 0 else { return 127 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }
}
