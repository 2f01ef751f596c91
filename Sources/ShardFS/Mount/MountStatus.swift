import Foundation

/// What a running mount reports about itself: `shardfs status MNT` reads it
/// from the hidden file `MNT/.shardfs-status` (looked up by name, never
/// listed), which the daemon answers with a fresh snapshot at each open.
public struct MountStatus: Codable, Equatable, Sendable {
    /// The hidden file's name at the root of a mount.
    public static let fileName = ".shardfs-status"

    public var mountpoint: String
    public var source: String
    public var layout: String
    public var pid: Int32
    public var files: Int
    public var bytes: Int
    public var readsServed: Int
    public var bytesServed: Int
    /// The materialiser of `--persist-to`, if any.
    public var persist: MaterialiserStatus?
    /// The daemon's log file (absent when it runs in the foreground).
    public var log: String?

    public init(mountpoint: String, source: String, layout: String, pid: Int32, files: Int, bytes: Int,
                readsServed: Int, bytesServed: Int, persist: MaterialiserStatus?, log: String? = nil) {
        self.mountpoint = mountpoint
        self.source = source
        self.layout = layout
        self.pid = pid
        self.files = files
        self.bytes = bytes
        self.readsServed = readsServed
        self.bytesServed = bytesServed
        self.persist = persist
        self.log = log
    }

    public func json() -> [UInt8] {
        let encoder = JSONEncoder.sorted
        return ((try? encoder.encode(self)).map { Array($0) } ?? Array("{}".utf8)) + [0x0A]
    }
}
