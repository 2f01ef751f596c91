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
    /// Hand unchanged source bytes to the kernel as file descriptors (splice).
    public var splice = true
    /// Largest read request; replies above the pipe size (1 MiB here) cannot splice.
    public var maximumRead = 512 << 10
    /// Worker threads serving requests.
    public var maximumThreads = 16
    /// Attribute and entry timeout, seconds: content never changes, so long.
    public var timeout = 3600.0

    public init(mountpoint: String) {
        self.mountpoint = mountpoint
    }

    /// The `-o` option string given to `fuse_session_new`.
    public var optionString: String {
        var options = ["ro", "noatime", "default_permissions", "fsname=shardfs", "subtype=shardfs", "max_read=\(maximumRead)"]
        if allowOther { options.append("allow_other") }
        return options.joined(separator: ",")
    }
}
