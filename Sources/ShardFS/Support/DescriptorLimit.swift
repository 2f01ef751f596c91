#if canImport(Glibc)
import Glibc
#endif

/// The process's open-file limit, and how many source files it may keep open.
///
/// A node's default soft limit is 1024 (Ubuntu's, and what a Slurm job
/// inherits from a login shell), while a trained 405B tag holds 25,000 to
/// 60,000 files. So ShardFS raises the soft limit towards the hard one at
/// start, as Go's runtime does, but never depends on it: source files are
/// held open under a budget (`OpenFiles`) that fits the soft limit as it is.
public enum DescriptorLimit {
    /// The soft limit after raising it towards the hard limit (once per
    /// process; the first caller raises it).
    public static var soft: Int { raised }

    private static let raised: Int = {
        let resource = Int32(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        // The hard limit can be "unlimited" (or huge): past 1<<20 the kernel
        // refuses it (nr_open) and nothing needs more.
        let wanted = min(limit.rlim_max, rlim_t(1 << 20))
        if limit.rlim_cur < wanted {
            var raised = limit
            raised.rlim_cur = wanted
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return Int(clamping: limit.rlim_cur)
    }()

    /// Descriptors kept for everything that is not a source file: the FUSE
    /// channel and its cloned descriptors (one per thread), logs, pipes,
    /// output files being written, files a check opens for a moment.
    public static let reserve = 384

    /// Most source files held open at once: half of what is left of the
    /// soft limit after the reserve, at most 256 (enough for every reader's
    /// working set: an hf export stitches a tensor from at most a few hundred
    /// rank-file pieces), at least 16. Each open source also holds two
    /// mappings, far below `vm.max_map_count` (65,530 by default).
    public static func sourceBudget(softLimit: Int) -> Int {
        max(16, min(256, (softLimit - reserve) / 2))
    }
}
