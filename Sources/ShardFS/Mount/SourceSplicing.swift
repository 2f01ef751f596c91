/// Which source bytes a mount hands the kernel as file descriptors (splice)
/// rather than copying them through its own buffer.
///
/// Splicing skips a copy, but the kernel reads spliced bytes when the reply
/// is sent, after anything the daemon could check. Under a read lease
/// (`ReadLeases`) no writer can get in before then; without one (a network
/// or FUSE file system, or a file already open for writing), a copy can be
/// checked before it is sent, a splice only after.
public enum SourceSplicing: String, CaseIterable, Sendable {
    /// Splice every source, checking unleased ones after replying: a read
    /// racing an in-place write of an unleased source may get either
    /// version, as reading the file directly would; the change is found and
    /// every read after it fails. The default: behind 500 µs storage (FUSE,
    /// as FSx for Lustre is to a node) a cold load ran 1.16x of converted
    /// files spliced, 1.01x copied (BENCHMARKS.md).
    case always
    /// Splice sources under a lease; copy the others and check them before
    /// replying (a change their file system's stat shows never reaches a
    /// reader).
    case leased
    /// Copy every source's bytes and check them before replying; take no leases.
    case never
}
