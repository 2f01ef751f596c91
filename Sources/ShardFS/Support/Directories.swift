#if canImport(Glibc)
import Glibc
#endif

/// Making directories, one way for every writer (convert's OUT, the
/// materialiser's DIR, the manifest's folder, the daemon's log folder), with
/// the real errno in the error: Foundation's `createDirectory` reports its
/// own codes, and passing those to `strerror` told a user "Unknown error
/// 513" where the truth was "Permission denied". And making them durable:
/// what convert and the materialiser write must survive a crash with the
/// directories that hold it.
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

    /// `make`, then each directory made fsynced into its parent, so that it
    /// (and a file renamed into it and fsynced there later) survives a
    /// crash: what every writer of checkpoint files uses. `sync` is the
    /// fsync (a test watches it).
    @discardableResult
    static func makeDurable(_ path: String, mode: mode_t = 0o755,
                            sync: (String) throws(ShardFSError) -> Void = Directories.sync) throws(ShardFSError) -> [String] {
        let made = try make(path, mode: mode)
        for directory in made { try sync(parent(of: directory)) }
        return made
    }

    /// fsync of `directory`, so that the entries made, renamed or removed
    /// in it survive a crash.
    static func sync(_ directory: String) throws(ShardFSError) {
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ShardFSError.io(path: directory, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ShardFSError.io(path: directory, operation: "fsync", errno: errno) }
    }

    /// fsync of the directory holding `path` (a file just renamed there).
    static func syncParent(of path: String) throws(ShardFSError) {
        try sync(parent(of: path))
    }

    /// The directory holding `path` ("." for a bare name, "/" at the top).
    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The names in `directory` (not `.` and `..`), sorted; the error names
    /// the directory and the real errno, worded as every other (Foundation's
    /// `contentsOfDirectory` words its own).
    static func list(_ directory: String) throws(ShardFSError) -> [String] {
        guard let stream = opendir(directory) else { throw ShardFSError.io(path: directory, operation: "list", errno: errno) }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
