#if canImport(Glibc)
import Glibc
#endif

/// Keeps every file a checkpoint opens inside its model directory: a shard
/// name or a symlink must not make ShardFS read (and, through a mount, serve)
/// a file the model directory does not hold.
struct SourceContainment {
    /// The model directory as given, and resolved.
    let directory: String
    let root: String
    /// Resolved parent directories of names checked so far (a tag's 60,000
    /// files sit in about a thousand directories: resolving each path whole
    /// cost a dozen readlinks per file).
    private var parents: [Substring: String?] = [:]

    init(directory: String) throws(ShardFSError) {
        guard let root = SourceContainment.resolve(directory) else {
            throw ShardFSError.badSource(file: directory, reason: "cannot resolve the model directory's path")
        }
        self.directory = directory
        self.root = root
    }

    /// Refuses `name` (a plain name inside `directory`, already checked for `/`
    /// and `..`) when it resolves to a file outside the resolved `directory`.
    ///
    /// One layout is let through: the Hugging Face hub cache, where
    /// `<repo>/snapshots/<revision>/<name>` links to `<repo>/blobs/<hash>`;
    /// refusing it would refuse every model downloaded with `transformers`.
    static func check(directory: String, name: String) throws(ShardFSError) {
        var containment = try SourceContainment(directory: directory)
        try containment.check(name)
    }

    /// `check(directory:name:)` for a name in this directory.
    mutating func check(_ name: String) throws(ShardFSError) {
        // A dangling link or a missing file is reported by whoever opens it.
        guard let target = resolved(name) else { return }
        if SourceContainment.isInside(target, root) { return }
        if let blobs = SourceContainment.hubCacheBlobs(snapshot: root), SourceContainment.isInside(target, blobs) { return }
        throw ShardFSError.badSource(
            file: name, reason: "resolves to \(target), outside the model directory \(root) (a symlink out of SRC is refused)")
    }

    /// Where `name` leads: its parent resolved once per directory, then the
    /// last component, followed only when it is a symlink.
    private mutating func resolved(_ name: String) -> String? {
        let path = directory + "/" + name
        guard let slash = path.lastIndex(of: "/") else { return SourceContainment.resolve(path) }
        let parentPath = path[..<slash]
        let parent: String?
        if let known = parents[parentPath] {
            parent = known
        } else {
            parent = SourceContainment.resolve(String(parentPath))
            parents[parentPath] = parent
        }
        guard let parent else { return nil }
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        if info.st_mode & S_IFMT == S_IFLNK { return SourceContainment.resolve(path) }
        return (parent == "/" ? "" : parent) + "/" + path[path.index(after: slash)...]
    }

    static func isInside(_ path: String, _ directory: String) -> Bool {
        directory == "/" ? path.hasPrefix("/") : path.hasPrefix(directory + "/")
    }

    /// `<repo>/blobs` when `root` is `<repo>/snapshots/<revision>`, else nil.
    static func hubCacheBlobs(snapshot root: String) -> String? {
        let parts = root.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[parts.count - 2] == "snapshots" else { return nil }
        let repo = parts.dropLast(2).joined(separator: "/")
        return repo + "/blobs"
    }

    static func resolve(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
