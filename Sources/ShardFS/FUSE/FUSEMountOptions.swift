import Foundation

/// How a mount talks to the kernel. The defaults favour one streaming pass
/// per file, which is how training loads rank files.
public struct FUSEMountOptions: Sendable {
    public var mountpoint: String
    /// Let other users see the mount (needs `user_allow_other` for non-root).
    public var allowOther = false
    /// Bypass the page cache: 2-3x faster streaming (a spliced reply lands in
    /// the reader's buffer, not in a cache page first), but no shared mmap and
    /// no cached re-reads.
    public var directIO = true
    /// With `directIO`, files smaller than this still go through the page
    /// cache. A torch.save file is read as a few small metadata reads plus
    /// its records: under direct_io each small read is a round trip to the
    /// daemon, which for xser's thousands of small tensor files cost more
    /// than the page cache's extra copy (the kernel reads ahead, a whole
    /// small file in one or two requests).
    public var directIOFromBytes = MountedFileSystem.streamingFileBytes
    /// Hand unchanged source bytes to the kernel as file descriptors (splice).
    public var splice = true
    /// Largest read request; replies above the pipe size (1 MiB here) cannot splice.
    public var maximumRead = 512 << 10
    /// Worker threads serving requests.
    public var maximumThreads = 16
    /// Attribute and entry timeout, seconds: content never changes, so long.
    public var timeout = 3600.0

    /// Whether a file of `size` bytes is served with direct_io.
    public func directIO(forSize size: Int) -> Bool { directIO && size >= directIOFromBytes }

    public init(mountpoint: String) {
        self.mountpoint = mountpoint
    }

    /// Whether fusermount3 lets users other than root pass `allow_other`:
    /// only when `user_allow_other` is set in its configuration file.
    public static func usersMayAllowOther(configuration path: String = "/etc/fuse.conf") -> Bool {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let setting = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            return setting.split(whereSeparator: { $0 == " " || $0 == "\t" }) == ["user_allow_other"]
        }
    }

    /// The `-o` option string given to `fuse_session_new`.
    public var optionString: String {
        var options = ["ro", "noatime", "default_permissions", "fsname=shardfs", "subtype=shardfs", "max_read=\(maximumRead)"]
        if allowOther { options.append("allow_other") }
        return options.joined(separator: ",")
    }
}
