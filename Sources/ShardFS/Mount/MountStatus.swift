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
    /// How source bytes are served (spliced under leases, or copied).
    public var sources: SourceServing?

    /// How a mount serves its sources' bytes (`SourceSplicing`, `ReadLeases`).
    public struct SourceServing: Codable, Equatable, Sendable {
        /// The policy: leased, always or never.
        public var splicing: String
        /// Sources read so far under a read lease (spliced).
        public var leased: Int
        /// Sources read so far without one (copied and checked, unless
        /// `splicing` is always), and why, for a few of them.
        public var unleased: Int
        public var unleasedExamples: [String]
        /// Sources whose lease broke: another process opened them for writing.
        public var leasesBroken: Int

        public init(splicing: String, leased: Int, unleased: Int, unleasedExamples: [String], leasesBroken: Int) {
            self.splicing = splicing
            self.leased = leased
            self.unleased = unleased
            self.unleasedExamples = unleasedExamples
            self.leasesBroken = leasesBroken
        }

        /// One line for `shardfs status`, and the reasons, one per line.
        public var summary: [String] {
            let copied = splicing == "always" ? "spliced, checked after each reply" : "copied, checked before each reply"
            var lines = splicing == "never"
                ? ["sources: copied, checked before each reply (--splice-sources never)"]
                : ["sources: \(leased) leased (spliced), \(unleased) unleased (\(copied)), \(leasesBroken) leases broken by a writer"]
            lines += unleasedExamples.map { "  unleased: \($0)" }
            return lines
        }
    }

    public init(mountpoint: String, source: String, layout: String, pid: Int32, files: Int, bytes: Int,
                readsServed: Int, bytesServed: Int, persist: MaterialiserStatus?, log: String? = nil, sources: SourceServing? = nil) {
        self.sources = sources
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
