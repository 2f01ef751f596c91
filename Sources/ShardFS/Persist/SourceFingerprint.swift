/// What identifies a source shard for a persisted copy: if any of these
/// differ, files persisted from it are not the files this source makes.
public struct SourceFingerprint: Codable, Equatable, Sendable {
    public let name: String
    public let size: Int
    /// Modification time, nanoseconds since the epoch.
    public let mtimeNanoseconds: Int
    /// CRC-32 of the safetensors header (its length prefix and JSON): catches
    /// a shard rewritten with other tensors but the same size and mtime.
    public let headerCRC32: UInt32

    init(name: String, size: Int, mtimeNanoseconds: Int, headerCRC32: UInt32) {
        self.name = name
        self.size = size
        self.mtimeNanoseconds = mtimeNanoseconds
        self.headerCRC32 = headerCRC32
    }

    public init(_ file: SourceFile) throws(ShardFSError) {
        name = file.name
        size = file.size
        mtimeNanoseconds = file.modificationTime.tv_sec * 1_000_000_000 + file.modificationTime.tv_nsec
        let prefix = try file.readBytes(at: 0, count: 8)
        let length = prefix.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var crc = CRC32()
        prefix.withUnsafeBytes { crc.update($0) }
        // The header was validated when the checkpoint was opened: its length fits.
        let header = try file.readBytes(at: 8, count: length)
        header.withUnsafeBytes { crc.update($0) }
        headerCRC32 = crc.value
    }

    /// How `other` (found in a target directory) differs from this, or nil.
    func difference(from other: SourceFingerprint) -> String? {
        if size != other.size { return "\(name) is \(size) bytes, was \(other.size)" }
        if mtimeNanoseconds != other.mtimeNanoseconds { return "\(name) was modified since (mtime differs)" }
        if headerCRC32 != other.headerCRC32 { return "\(name) has another safetensors header" }
        return nil
    }
}
