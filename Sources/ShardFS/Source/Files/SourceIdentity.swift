#if canImport(Glibc)
import Glibc
#endif

/// What a source file was when ShardFS first opened it: its bytes are only
/// trusted while every one of these is unchanged. A file reopened later
/// (after its descriptor was closed to stay within the budget) must still be
/// this file; a mount turns any difference into EIO rather than serve bytes
/// the plan was not made from.
public struct SourceIdentity: Equatable, Sendable {
    public let size: Int
    public let modificationTime: timespec
    /// The status-change time: moves on every write and metadata change, and
    /// unlike the mtime cannot be set back (`touch -r` restores an mtime).
    public let changeTime: timespec
    public let inode: UInt
    public let device: UInt

    public init(_ info: stat) {
        size = Int(info.st_size)
        modificationTime = info.st_mtim
        changeTime = info.st_ctim
        inode = UInt(info.st_ino)
        device = UInt(info.st_dev)
    }

    public init(size: Int, modificationTime: timespec, changeTime: timespec, inode: UInt, device: UInt) {
        self.size = size
        self.modificationTime = modificationTime
        self.changeTime = changeTime
        self.inode = inode
        self.device = device
    }

    /// How `info` (a later stat of the same path or descriptor) differs, or nil.
    public func difference(from info: stat) -> String? {
        if UInt(info.st_ino) != inode || UInt(info.st_dev) != device {
            return "replaced by another file (inode \(inode) -> \(info.st_ino))"
        }
        if Int(info.st_size) != size { return "size changed from \(size) to \(info.st_size) bytes" }
        if info.st_mtim.tv_sec != modificationTime.tv_sec || info.st_mtim.tv_nsec != modificationTime.tv_nsec {
            return "modified (mtime changed)"
        }
        if info.st_ctim.tv_sec != changeTime.tv_sec || info.st_ctim.tv_nsec != changeTime.tv_nsec {
            return "changed (ctime moved: written with its mtime restored, or its metadata changed)"
        }
        return nil
    }

    public static func == (a: SourceIdentity, b: SourceIdentity) -> Bool {
        a.size == b.size && a.inode == b.inode && a.device == b.device
            && a.modificationTime.tv_sec == b.modificationTime.tv_sec && a.modificationTime.tv_nsec == b.modificationTime.tv_nsec
            && a.changeTime.tv_sec == b.changeTime.tv_sec && a.changeTime.tv_nsec == b.changeTime.tv_nsec
    }
}
