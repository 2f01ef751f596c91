/// How a mount talks to the kernel. The defaults favour correctness for every
/// reader (shared mmap works, re-reads come from the page cache).
public struct FUSEMountOptions: Sendable {
    public var mountpoint: String
    /// Let other users see the mount (needs `user_allow_other` for non-root).
    public var allowOther = false
    /// Bypass the page cache: faster streaming, but no shared mmap.
    public var directIO = false
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
