/// What identifies a source shard for a persisted copy: if any of these
/// differ, files persisted from it are not the files this source makes.
public struct SourceFingerprint: Codable, Equatable, Sendable {
    /// The file's name, held as its `SourceFile` holds it (one string per
    /// file of a 330,000-file tag is 47 MB).
    public let sourceName: SourceName
    public var name: String { sourceName.string }
    public let size: Int
    /// Modification time, nanoseconds since the epoch.
    public let mtimeNanoseconds: Int
    /// CRC-32 of the file's metadata: catches a source rewritten with other
    /// tensors but the same size and mtime. For a safetensors shard, its
    /// header (length prefix and JSON); for an NxD rank file (a torch.save
    /// zip), its first 4 KiB and last 4 KiB (`zipSpans`).
    public let headerCRC32: UInt32

    private enum CodingKeys: String, CodingKey {
        case name, size, mtimeNanoseconds, headerCRC32
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        sourceName = SourceName(try container.decode(String.self, forKey: .name))
        size = try container.decode(Int.self, forKey: .size)
        mtimeNanoseconds = try container.decode(Int.self, forKey: .mtimeNanoseconds)
        headerCRC32 = try container.decode(UInt32.self, forKey: .headerCRC32)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(size, forKey: .size)
        try container.encode(mtimeNanoseconds, forKey: .mtimeNanoseconds)
        try container.encode(headerCRC32, forKey: .headerCRC32)
    }

    init(name: String, size: Int, mtimeNanoseconds: Int, headerCRC32: UInt32) {
        self.sourceName = SourceName(name)
        self.size = size
        self.mtimeNanoseconds = mtimeNanoseconds
        self.headerCRC32 = headerCRC32
    }

    public init(_ file: SourceFile) throws(ShardFSError) {
        sourceName = file.sourceName
        size = file.size
        mtimeNanoseconds = file.modificationTime.tv_sec * 1_000_000_000 + file.modificationTime.tv_nsec
        var crc = CRC32()
        if file.name.hasSuffix(".safetensors") {
            let prefix = try file.readBytes(at: 0, count: 8)
            let length = prefix.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            prefix.withUnsafeBytes { crc.update($0) }
            // The header was validated when the checkpoint was opened; a file
            // changed since is caught by its size or mtime, never read past.
            guard length >= 0, length <= file.size - 8 else {
                throw ShardFSError.badSource(file: file.name, reason: "changed since it was opened (its header length no longer fits)")
            }
            try file.readBytes(at: 8, count: length).withUnsafeBytes { crc.update($0) }
        } else {
            let (head, tail) = SourceFingerprint.zipSpans(size: file.size)
            try file.readBytes(at: head.lowerBound, count: head.count).withUnsafeBytes { crc.update($0) }
            try file.readBytes(at: tail.lowerBound, count: tail.count).withUnsafeBytes { crc.update($0) }
        }
        headerCRC32 = crc.value
    }

    /// The fingerprint of `file` whose header sums to `headerCRC32`.
    init(_ file: SourceFile, headerCRC32: UInt32) {
        sourceName = file.sourceName
        size = file.size
        mtimeNanoseconds = file.modificationTime.tv_sec * 1_000_000_000 + file.modificationTime.tv_nsec
        self.headerCRC32 = headerCRC32
    }

    /// The fingerprint of an NxD rank or tensor file from the bytes its
    /// parse read anyway (a tag's 60,000 files are not opened twice).
    init(_ file: SourceFile, bytes: HeadAndTail) throws(ShardFSError) {
        sourceName = file.sourceName
        size = file.size
        mtimeNanoseconds = file.modificationTime.tv_sec * 1_000_000_000 + file.modificationTime.tv_nsec
        var crc = CRC32()
        let (head, tail) = SourceFingerprint.zipSpans(size: file.size)
        try bytes.read(head.lowerBound, head.count).withUnsafeBytes { crc.update($0) }
        try bytes.read(tail.lowerBound, tail.count).withUnsafeBytes { crc.update($0) }
        headerCRC32 = crc.value
    }

    /// The spans of a torch.save zip that are summed: its first 4 KiB and
    /// (of the rest) its last 4 KiB (`HeadAndTail.block`), which hold the pickle's start and the
    /// zip's end records and directory with every record's CRC-32 (all of it
    /// for a tensor file; the tail of it for a rank file of many records).
    static func zipSpans(size: Int) -> (head: Range<Int>, tail: Range<Int>) {
        let head = min(size, 4 << 10), tail = min(size - head, HeadAndTail.block)
        return (0..<head, size - tail..<size)
    }

    /// How `other` (found in a target directory) differs from this, or nil.
    func difference(from other: SourceFingerprint) -> String? {
        if size != other.size { return "\(name) is \(size) bytes, was \(other.size)" }
        if mtimeNanoseconds != other.mtimeNanoseconds { return "\(name) was modified since (mtime differs)" }
        if headerCRC32 != other.headerCRC32 { return "\(name) has other metadata (safetensors header or zip directory)" }
        return nil
    }
}
