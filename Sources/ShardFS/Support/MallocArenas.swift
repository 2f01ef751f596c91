import CLinux

/// How many malloc arenas the process may use. glibc gives threads arenas of
/// their own (up to 8 per core), and memory freed in one arena is not reused
/// by another: opening a training tag parses its files on every core, and
/// with a 70B-count tag's 300,000 xser tensor files the peak RSS was 1.7x
/// the heap (653 MB for a 318 MB heap; 382 MB with 2 arenas). Two keep
/// the parallel parse from contending on one lock; ShardFS's hot paths copy
/// into buffers made once, so they hardly allocate.
public enum MallocArenas {
    public static let count: Int32 = 2
    /// Blocks from this size on are mapped apart and unmapped when freed: a
    /// training tag's tables are built through transient arrays of
    /// hundreds of thousands of entries (megabytes each), which otherwise
    /// leave holes in the heap the peak RSS counts.
    public static let mmapThreshold: Int32 = 256 << 10

    /// Gives the pages freed since back to the system: after a phase that
    /// allocates and frees much in small pieces (a tag's parse, a plan),
    /// its free pages between the blocks kept still count in the RSS.
    public static func releaseFree() {
        shardfs_release_free_memory()
    }

    /// Call first thing in `main`, before any thread allocates.
    public static func limit() {
        shardfs_limit_malloc_arenas(count)
        shardfs_malloc_mmap_threshold(mmapThreshold)
    }
}
