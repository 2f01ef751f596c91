import CGather
import Synchronization

/// Bounds the page-table entries that gathers leave behind in the sources'
/// mappings, process-wide.
///
/// A narrow column cut touches every page of its source rows (at TP=32 a
/// 4 KiB page holds 256 bytes a rank wants), so mapping and unmapping cost
/// more than the copy. Releasing after every gather made readers of
/// neighbouring ranks fault the same pages again and again; releasing all
/// mappings once `budget` bytes have been touched lets concurrent readers of
/// one layer share the mapped pages while keeping RSS bounded (the file pages
/// themselves stay in the page cache; only this process's mapping of them
/// counts towards its RSS).
enum MappedPages {
    /// Mapped bytes touched since the last release, all threads together.
    private static let touchedSinceRelease = Atomic<Int>(0)
    /// About the RSS file-mapped pages may add (plus fault-around slack and
    /// the windows being copied by other threads at the moment of release).
    static let budget = 32 << 20

    /// Records `bytes` touched through the mappings of `sources`; the thread
    /// that crosses the budget releases every mapping of `sources`.
    static func touched(_ bytes: Int, sources: [SourceFile]) {
        let total = touchedSinceRelease.add(bytes, ordering: .relaxed).newValue
        // Exactly one thread crosses the budget; it starts the next count.
        guard total >= budget, total - bytes < budget else { return }
        touchedSinceRelease.subtract(total, ordering: .relaxed)
        // Whole mappings: this also drops pages fault-around mapped beside
        // the spans, and walking unpopulated page tables is cheap.
        for source in sources {
            if let mapping = source.mapping { shardfs_release_mapped(mapping, source.size) }
        }
    }
}
