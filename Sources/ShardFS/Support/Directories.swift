#if canImport(Glibc)
import Glibc
#endif

/// Making directories, one way for every writer (convert's OUT, the
/// materialiser's DIR, the manifest's folder, the daemon's log folder), with
/// the real errno in the error: Foundation's `createDirectory` reports its
/// own codes, and passing those to `strerror` told a user "Unknown error
/// 513" where the truth was "Permission denied".
enum Directories {
    /// `mkdir -p path`: makes each missing component with `mode`; a
    /// component that exists must be a directory (or a symlink to one).
    /// Returns the directories it made, parents first. The error names the
    /// first directory that could not be made, and why.
    @discardableResult
    static func make(_ path: String, mode: mode_t = 0o755) throws(ShardFSError) -> [String] {
        var made: [String] = []
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, mode) == 0 {
                made.append(prefix)
                continue
            }
            let code = errno
            var info = stat()
            if code == EEXIST, stat(prefix, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { continue }
            throw ShardFSError.io(path: String(prefix.hasPrefix("./") ? prefix.dropFirst(2) : Substring(prefix)),
                                  operation: "mkdir", errno: code == EEXIST ? ENOTDIR : code)
        }
        return made
    }
}
