/// What identifies a source shard for a persisted copy: if any of these
/// differ, files persisted from it are not the files this source makes.
public struct SourceFingerprint: Codable, Equatable, Sendable {
    public let name: String
    public let size: Int
    /// Modification time, nanoseconds since the epoch.
    public let mtimeNanoseconds: Int
    /// CRC-32 of the file's metadata: catches a source rewritten with other
    /// tensors but the same size and mtime. For a safetensors shard, its
    /// header (length prefix and JSON); for an NxD rank file (a torch.save
    /// zip), its first 4 KiB and last 64 KiB, which hold the pickle's start
    /// and the zip directory.
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
            let head = min(file.size, 4 << 10), tail = min(file.size - head, 64 << 10)
            try file.readBytes(at: 0, count: head).withUnsafeBytes { crc.update($0) }
            try file.readBytes(at: file.size - tail, count: tail).withUnsafeBytes { crc.update($0) }
        }
        headerCRC32 = crc.value
    }

    /// How `other` (found in a target directory) differs from this, or nil.
    func difference(from other: SourceFingerprint) -> String? {
        if size != other.size { return "\(name) is \(size) bytes, was \(other.size)" }
        if mtimeNanoseconds != other.mtimeNanoseconds { return "\(name) was modified since (mtime differs)" }
        if headerCRC32 != other.headerCRC32 { return "\(name) has other metadata (safetensors header or zip directory)" }
        return nil
    }
}
