import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Notices source files that change while mounted. A rank file is only as
/// good as the bytes it is cut from: once a source's size, mtime or inode
/// differs from what was planned against, every file that uses it must fail
/// with EIO rather than serve stale or mixed bytes.
public final class SourceWatch: Sendable {
    public let sources: [SourceFile]
    private let broken: Mutex<[String?]>
    /// Broken sources whose files' cached pages have been dropped.
    private let announced = Mutex<Set<Int>>([])

    public init(sources: [SourceFile]) {
        self.sources = sources
        broken = Mutex([String?](repeating: nil, count: sources.count))
    }

    /// Why source `index` is unusable, or nil while it is intact.
    public func problem(_ index: Int) -> String? { broken.withLock { $0[index] } }

    /// Checks the open descriptor (cheap: the read path calls it). Returns the
    /// problem when the file changed in place (size or mtime).
    public func checkOpenFile(_ index: Int) -> String? {
        if let known = problem(index) { return known }
        let source = sources[index]
        var info = stat()
        guard fstat(source.descriptor.rawValue, &info) == 0 else { return markBroken(index, "fstat failed (errno \(errno))") }
        return compare(index, info)
    }

    /// Checks the path too (the poller calls it): catches a file deleted or
    /// replaced by another (a rename over it), which the descriptor cannot see.
    /// Returns the indexes that became broken on this call.
    public func checkPaths() -> [Int] {
        var newlyBroken: [Int] = []
        for index in sources.indices where problem(index) == nil {
            var info = stat()
            let problem: String?
            if stat(sources[index].path, &info) != 0 {
                problem = markBroken(index, errno == ENOENT ? "deleted" : "stat failed (errno \(errno))")
            } else if UInt(info.st_ino) != sources[index].inode {
                problem = markBroken(index, "replaced by another file (inode \(sources[index].inode) -> \(info.st_ino))")
            } else {
                problem = compare(index, info)
            }
            if problem != nil { newlyBroken.append(index) }
        }
        return newlyBroken
    }

    /// Sources found broken (by a read or by `checkPaths`) that have not yet
    /// been returned here: the caller drops their files' cached pages once.
    public func takeNewlyBroken() -> [Int] {
        let brokenNow = broken.withLock { state in state.indices.filter { state[$0] != nil } }
        return announced.withLock { done in
            let fresh = brokenNow.filter { !done.contains($0) }
            done.formUnion(fresh)
            return fresh
        }
    }

    private func compare(_ index: Int, _ info: stat) -> String? {
        let source = sources[index]
        if Int(info.st_size) != source.size {
            return markBroken(index, "size changed from \(source.size) to \(info.st_size) bytes")
        }
        if info.st_mtim.tv_sec != source.modificationTime.tv_sec || info.st_mtim.tv_nsec != source.modificationTime.tv_nsec {
            return markBroken(index, "modified (mtime changed)")
        }
        return nil
    }

    private func markBroken(_ index: Int, _ reason: String) -> String {
        broken.withLock { state in
            if state[index] == nil { state[index] = reason }
            return state[index]!
        }
    }
}
