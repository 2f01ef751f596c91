#if canImport(Glibc)
import Glibc
#endif

/// Keeps every file a checkpoint opens inside its model directory: a shard
/// name or a symlink must not make ShardFS read (and, through a mount, serve)
/// a file the model directory does not hold.
enum SourceContainment {
    /// Refuses `name` (a plain name inside `directory`, already checked for `/`
    /// and `..`) when it resolves to a file outside the resolved `directory`.
    ///
    /// One layout is let through: the Hugging Face hub cache, where
    /// `<repo>/snapshots/<revision>/<name>` links to `<repo>/blobs/<hash>`;
    /// refusing it would refuse every model downloaded with `transformers`.
    static func check(directory: String, name: String) throws(ShardFSError) {
        guard let root = resolve(directory) else {
            throw ShardFSError.badSource(file: directory, reason: "cannot resolve the model directory's path")
        }
        // A dangling link or a missing file is reported by whoever opens it.
        guard let target = resolve(directory + "/" + name) else { return }
        if isInside(target, root) { return }
        if let blobs = hubCacheBlobs(snapshot: root), isInside(target, blobs) { return }
        throw ShardFSError.badSource(
            file: name, reason: "resolves to \(target), outside the model directory \(root) (a symlink out of SRC is refused)")
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
