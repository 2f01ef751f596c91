#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where a background daemon writes its log, and how that file is opened.
///
/// A fixed name in a world-writable directory (the old
/// `/tmp/shardfs-<last component>.log`) let two mounts named alike, or two
/// users, collide, and let anyone plant a symlink there for a root daemon to
/// append through. So the default lives in a directory of the daemon's own
/// user, is named after the whole mount path and the host (homes are often on
/// FSx, shared by every node), and no symlink is followed at the directory or
/// the file.
public enum DaemonLog {
    /// The directory of the default log: `/var/log/shardfs` for root, else
    /// `$XDG_STATE_HOME/shardfs`, else `~/.local/state/shardfs` (the XDG base
    /// directory spec's place for logs). `home` is asked only when needed.
    public static func defaultDirectory(euid: uid_t, environment: [String: String],
                                        home: () -> String?) throws(ShardFSError) -> String {
        if euid == 0 { return "/var/log/shardfs" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") {
            return trimmedSlashes(state) + "/shardfs"
        }
        if let home = environment["HOME"].flatMap({ $0.hasPrefix("/") ? $0 : nil }) ?? home(), home.hasPrefix("/") {
            return trimmedSlashes(home) + "/.local/state/shardfs"
        }
        throw ShardFSError.badLayout(flag: "--log-file", reason: "no home directory is known for uid \(euid) (neither HOME nor XDG_STATE_HOME is set); name the daemon's log file")
    }

    /// The default log's file name: the whole mount path, then `@` and the
    /// host, percent-encoded so that different paths never share a name
    /// (`/mnt/llama3-70b` on host `ip-10-1-2-3` is `mnt%2Fllama3-70b@ip-10-1-2-3.log`).
    public static func fileName(mountpoint: String, host: String) -> String {
        var path = Substring(mountpoint)
        while path.first == "/" { path = path.dropFirst() }
        let encodedHost = encode(host.utf8.prefix(64))
        var name = encode(path.utf8)
        // NAME_MAX is 255 bytes: a longer path keeps its end, after a hash of the whole.
        if name.utf8.count + encodedHost.utf8.count + 5 > 255 {
            let hash = String(FNV1a.hash(mountpoint.utf8), radix: 16)
            name = hash + "-" + encode(path.utf8.suffix(60))
        }
        return name + "@" + encodedHost + ".log"
    }

    /// Opens the default log, `directory/name`, for appending: the directory is
    /// made (0700) if missing and must then be a real directory of this user
    /// that nobody else can write to; the file is made 0600 and must be a
    /// regular file of this user. Neither may be a symlink.
    public static func openDefault(directory: String, name: String) throws(ShardFSError) -> Int32 {
        try makeDirectories(directory)
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dirFD >= 0 else {
            let code = errno
            if code == ELOOP || code == ENOTDIR {
                throw ShardFSError.badSource(file: directory, reason: "is a symbolic link or not a directory; the daemon's log directory must be a real directory of yours (or give --log-file)")
            }
            throw ShardFSError.io(path: directory, operation: "open the log directory", errno: code)
        }
        defer { close(dirFD) }
        var info = stat()
        guard fstat(dirFD, &info) == 0 else { throw ShardFSError.io(path: directory, operation: "stat", errno: errno) }
        guard info.st_uid == geteuid() else {
            throw ShardFSError.badSource(file: directory, reason: "is owned by uid \(info.st_uid), not by uid \(geteuid()) which runs the daemon; not logging there (give --log-file)")
        }
        guard info.st_mode & 0o022 == 0 else {
            throw ShardFSError.badSource(file: directory, reason: "is writable by other users (mode \(String(info.st_mode & 0o7777, radix: 8))); `chmod go-w` it or give --log-file")
        }
        let path = directory + "/" + name
        let fd = openat(dirFD, name, appendFlags, 0o600)
        guard fd >= 0 else { throw openFailure(path, errno) }
        do throws(ShardFSError) {
            guard fstat(fd, &info) == 0 else { throw ShardFSError.io(path: path, operation: "stat", errno: errno) }
            guard info.st_mode & S_IFMT == S_IFREG else {
                throw ShardFSError.badSource(file: path, reason: "is not a regular file; not logging to it")
            }
            guard info.st_uid == geteuid() else {
                throw ShardFSError.badSource(file: path, reason: "is owned by uid \(info.st_uid), not by uid \(geteuid()) which runs the daemon; not logging to it")
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Where the log goes when the per-user directory cannot be had (a
    /// service account without a home, a home on FSx not mounted yet): a log
    /// that cannot be written must not stop a mount. The first of
    /// `$XDG_RUNTIME_DIR/shardfs` and `/tmp/shardfs-<uid>` that passes
    /// `openDefault`'s checks (this user's own, private, no symlink), else a
    /// fresh private directory `/tmp/shardfs-<uid>-XXXXXX` (mkdtemp: nobody
    /// can have planted it). Returns the path and the descriptor.
    public static func openFallback(name: String, euid: uid_t, environment: [String: String]) throws(ShardFSError) -> (path: String, fd: Int32) {
        var candidates: [String] = []
        if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") { candidates.append(trimmedSlashes(runtime) + "/shardfs") }
        candidates.append("/tmp/shardfs-\(euid)")
        var last: ShardFSError?
        for directory in candidates {
            do throws(ShardFSError) {
                return (directory + "/" + name, try openDefault(directory: directory, name: name))
            } catch {
                last = error
            }
        }
        var template = Array("/tmp/shardfs-\(euid)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        if made {
            let directory = String(cString: template.map { $0 })
            return (directory + "/" + name, try openDefault(directory: directory, name: name))
        }
        throw last ?? ShardFSError.io(path: "/tmp", operation: "make a private log directory", errno: errno)
    }

    /// Opens a log file the user named (`--log-file`): created 0600 if
    /// missing, appended to, never through a symlink at its last component.
    public static func openNamed(_ path: String) throws(ShardFSError) -> Int32 {
        let fd = open(path, appendFlags, 0o600)
        guard fd >= 0 else { throw openFailure(path, errno) }
        return fd
    }

    /// The home directory the password database gives `uid`, for when HOME is unset.
    public static func passwordHome(uid: uid_t) -> String? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, result != nil, let dir = entry.pw_dir else { return nil }
        return String(cString: dir)
    }

    /// This node's host name ("localhost" if it has none).
    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0, buffer[0] != 0 else { return "localhost" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let appendFlags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY

    private static func openFailure(_ path: String, _ code: Int32) -> ShardFSError {
        if code == ELOOP {
            return .badSource(file: path, reason: "is a symbolic link; the daemon never follows one to its log file (remove it, or give --log-file a real path)")
        }
        return .io(path: path, operation: "open the log file", errno: code)
    }

    /// What `openUsual` gives: the log, or why its directory is out of reach.
    public enum UsualLog {
        case opened(path: String, fd: Int32)
        /// No home is known, or the directory cannot be made (a home not
        /// mounted yet, read-only): not a refusal, the caller falls back
        /// (`openFallback`).
        case outOfReach(ShardFSError)
    }

    /// Opens the default log, `defaultDirectory`/`name`, through
    /// `openDefault`. A directory that cannot be had at all is not an error
    /// (`.outOfReach`, which says why); one that exists but is unsafe (a
    /// symlink, another user's, writable by others) is refused: that throws.
    public static func openUsual(name: String, euid: uid_t, environment: [String: String],
                                 home: () -> String?) throws(ShardFSError) -> UsualLog {
        let directory: String
        do throws(ShardFSError) {
            directory = try defaultDirectory(euid: euid, environment: environment, home: home)
            try makeDirectories(directory)
        } catch {
            return .outOfReach(error)
        }
        return .opened(path: directory + "/" + name, fd: try openDefault(directory: directory, name: name))
    }

    /// `mkdir -p` with mode 0700 for what it creates (ancestors that exist,
    /// symlinked or not, are the user's own business). The error names the
    /// directory wanted, and the errno of what could not be made.
    static func makeDirectories(_ directory: String) throws(ShardFSError) {
        do throws(ShardFSError) {
            try Directories.make(directory, mode: 0o700)
        } catch {
            guard case let .io(_, _, code) = error else { throw error }
            throw ShardFSError.io(path: directory, operation: "make the daemon's log directory", errno: code)
        }
    }

    private static func trimmedSlashes(_ path: String) -> String {
        var path = Substring(path)
        while path.count > 1 && path.last == "/" { path = path.dropLast() }
        return path == "/" ? "" : String(path)
    }

    /// Percent-encodes every byte but ASCII letters, digits, `-`, `.` and `_`.
    private static func encode<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        var out = ""
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".unicodeScalars)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hex[Int(byte >> 4)])
                out.unicodeScalars.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }
}
