/// One record of a zip archive, located: where its stored bytes are.
public struct ZipRecord: Equatable, Sendable {
    public let name: String
    /// Absolute offset of the stored data in the file.
    public let dataOffset: Int
    public let size: Int
    /// As the central directory says (0 in files torch.save wrote with CRC-32 off).
    public let crc32: UInt32
    public let localHeaderOffset: Int

    public init(name: String, dataOffset: Int, size: Int, crc32: UInt32, localHeaderOffset: Int) {
        self.name = name
        self.dataOffset = dataOffset
        self.size = size
        self.crc32 = crc32
        self.localHeaderOffset = localHeaderOffset
    }
}

/// The records of an untrusted zip archive written by torch.save, validated.
///
/// Reads the end of the file, the central directory and each record's local
/// header, never record data. Everything torch.save does not write (a
/// compressed or encrypted record, several disks) is refused, and every
/// record found lies inside the file, before the central directory, apart
/// from every other record, so callers can read `dataOffset..<dataOffset+size`
/// without further checks.
public struct ZipDirectory: Sendable {
    public static let maximumEntries = 1_000_000
    public static let maximumDirectorySize = 256 << 20
    /// Record names are archive paths such as `archive/data/123`; a longer
    /// name is not one torch.save wrote.
    public static let maximumNameLength = 4096

    static let entrySignature: UInt64 = 0x0201_4B50
    static let localSignature: UInt64 = 0x0403_4B50
    static let entryLength = 46
    static let localLength = 30
    /// General-purpose flag bits 0 (encrypted) and 6 (strong encryption).
    static let encryptionFlags = 0x41

    /// Records in central-directory order.
    public let records: [ZipRecord]
    private let index: [String: Int]

    public init(file: String, fileSize: Int,
                read: (_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        let location = try ZipEndRecords.locate(file: file, fileSize: fileSize, maximumEntries: ZipDirectory.maximumEntries,
                                                maximumDirectorySize: ZipDirectory.maximumDirectorySize, read: read)
        let directory = LittleEndianBytes(try read(location.offset, location.size))
        var records: [ZipRecord] = []
        records.reserveCapacity(location.count)
        var index: [String: Int] = [:]
        var position = 0
        for entry in 0..<location.count {
            let (record, next) = try ZipDirectory.entry(directory, at: position, number: entry, location: location, file: file, read: read)
            guard index[record.name] == nil else { throw bad("record \(record.name) appears twice in the central directory") }
            index[record.name] = records.count
            records.append(record)
            position = next
        }
        guard position == location.size else {
            throw bad("the central directory holds \(location.size) bytes but its \(location.count) entries end at byte \(position) of it")
        }
        try ZipDirectory.checkApart(records, file: file)
        self.records = records
        self.index = index
    }

    public func record(named name: String) -> ZipRecord? {
        index[name].map { records[$0] }
    }

    /// Parses central-directory entry `number` at `position` and checks its
    /// local header; returns the record and the position of the next entry.
    private static func entry(_ directory: LittleEndianBytes, at position: Int, number: Int, location: ZipDirectoryLocation,
                              file: String, read: (Int, Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) -> (ZipRecord, Int) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        // Built only for a refusal: a string per entry cost more than the entry's checks.
        func at() -> String { "central directory entry \(number) (byte \(location.offset + position))" }
        guard directory.field(position, 4) == entrySignature else { throw bad("\(at()): no entry signature (PK\\1\\2)") }
        guard let flags = directory.u16(position + 8), let method = directory.u16(position + 10),
              let crc = directory.u32(position + 16), let packedSize = directory.u32(position + 20),
              let plainSize = directory.u32(position + 24), let nameLength = directory.u16(position + 28),
              let extraLength = directory.u16(position + 30), let commentLength = directory.u16(position + 32),
              let diskStart = directory.u16(position + 34), let headerOffset = directory.u32(position + 42) else {
            throw bad("\(at()): the entry runs past the end of the central directory")
        }
        let nameStart = position + entryLength
        guard let nameBytes = directory.slice(nameStart, nameLength),
              directory.slice(nameStart + nameLength, extraLength + commentLength) != nil else {
            throw bad("\(at()): its name, extra field and comment run past the end of the central directory")
        }
        guard nameLength > 0, nameLength <= maximumNameLength else {
            throw bad("\(at()): a record name of \(nameLength) bytes (ShardFS reads names of 1 to \(maximumNameLength) bytes)")
        }
        guard let name = String(validating: nameBytes, as: UTF8.self) else { throw bad("\(at()): the record name is not valid UTF-8") }
        func record() -> String { "record \(name)" }
        guard flags & encryptionFlags == 0 else { throw bad("\(record()) is encrypted (flags 0x\(String(flags, radix: 16))); torch.save writes plain records only") }
        guard method == 0 else { throw bad("\(record()) is compressed (method \(method)); torch.save writes stored records only") }

        // Fields at their maximum are in the zip64 extra, in this order.
        let extra = directory.slice(nameStart + nameLength, extraLength) ?? []
        var fields = Zip64Fields(plainSize: plainSize, packedSize: packedSize, headerOffset: headerOffset, diskStart: diskStart)
        if let reason = fields.resolve(extra: Array(extra)) { throw bad("\(record()): \(reason)") }
        guard fields.diskStart == 0 else { throw bad("\(record()) starts on disk \(fields.diskStart): a multi-disk zip archive; torch.save writes one file") }
        guard fields.packedSize == fields.plainSize else {
            throw bad("\(record()) is stored but its compressed size \(fields.packedSize) differs from its size \(fields.plainSize)")
        }
        let size = fields.plainSize, header = fields.headerOffset

        // The local header: same name, no compression; its data follows its
        // name and extra field, and must end before the central directory.
        guard header <= location.offset - localLength - nameLength else {
            throw bad("\(record()): its local header at byte \(header) runs into the central directory (byte \(location.offset))")
        }
        let local = LittleEndianBytes(try read(header, localLength + nameLength))
        guard local.field(0, 4) == localSignature else { throw bad("\(record()): no local header signature (PK\\3\\4) at byte \(header)") }
        let localFlags = local.u16(6) ?? 0, localMethod = local.u16(8) ?? 0
        guard localFlags & encryptionFlags == 0 else { throw bad("\(record()) is encrypted (its local header's flags 0x\(String(localFlags, radix: 16))); torch.save writes plain records only") }
        guard localMethod == 0 else { throw bad("\(record()) is compressed (method \(localMethod) in its local header); torch.save writes stored records only") }
        guard local.u16(26) == nameLength, local.slice(localLength, nameLength)?.elementsEqual(nameBytes) == true else {
            let localName = local.u16(26) == nameLength ? String(decoding: local.slice(localLength, nameLength) ?? [], as: UTF8.self) : "a name of \(local.u16(26) ?? 0) bytes"
            throw bad("\(record()): its local header at byte \(header) names \(localName) instead")
        }
        let dataOffset = header + localLength + nameLength + (local.u16(28) ?? 0)
        guard dataOffset <= location.offset, size <= location.offset - dataOffset else {
            throw bad("\(record()): its \(size) bytes of data at byte \(dataOffset) run past the start of the central directory (byte \(location.offset))")
        }
        let next = nameStart + nameLength + extraLength + commentLength
        return (ZipRecord(name: name, dataOffset: dataOffset, size: size, crc32: UInt32(crc), localHeaderOffset: header), next)
    }

    /// Refuses records whose local header and data overlap another's.
    private static func checkApart(_ records: [ZipRecord], file: String) throws(ShardFSError) {
        let byOffset = records.sorted { $0.localHeaderOffset < $1.localHeaderOffset }
        for (previous, next) in zip(byOffset, byOffset.dropFirst()) where previous.dataOffset + previous.size > next.localHeaderOffset {
            throw ShardFSError.badSource(file: file, reason: "records \(previous.name) and \(next.name) overlap (\(previous.name)'s data ends at byte \(previous.dataOffset + previous.size), \(next.name)'s local header starts at byte \(next.localHeaderOffset))")
        }
    }
}

/// A central-directory entry's sizes, header offset and disk, with the
/// fields that hold their maximum (0xFFFFFFFF, 0xFFFF) replaced from the
/// zip64 extra (id 1), which holds exactly those, in this order.
struct Zip64Fields {
    var plainSize: Int
    var packedSize: Int
    var headerOffset: Int
    var diskStart: Int

    /// Resolves the fields through `extra`; returns what is wrong, or nil.
    mutating func resolve(extra: [UInt8]) -> String? {
        let bytes = LittleEndianBytes(extra)
        var position = 0
        var seen = false
        while position < extra.count {
            guard let id = bytes.u16(position), let length = bytes.u16(position + 2), bytes.slice(position + 4, length) != nil else {
                return "its extra field is malformed (a block at byte \(position) runs past its \(extra.count) bytes)"
            }
            if id == 1 {
                guard !seen else { return "its extra field holds two zip64 blocks" }
                seen = true
                var field = position + 4
                let end = field + length
                func next(_ count: Int) -> Int? {
                    guard field + count <= end else { return nil }
                    defer { field += count }
                    return count == 8 ? bytes.u64(field) : bytes.u32(field)
                }
                if plainSize == 0xFFFF_FFFF { guard let v = next(8) else { return "its zip64 extra lacks the size" }; plainSize = v }
                if packedSize == 0xFFFF_FFFF { guard let v = next(8) else { return "its zip64 extra lacks the compressed size" }; packedSize = v }
                if headerOffset == 0xFFFF_FFFF { guard let v = next(8) else { return "its zip64 extra lacks the local header offset" }; headerOffset = v }
                if diskStart == 0xFFFF { guard let v = next(4) else { return "its zip64 extra lacks the disk number" }; diskStart = v }
            }
            position += 4 + length
        }
        if !seen && (plainSize == 0xFFFF_FFFF || packedSize == 0xFFFF_FFFF || headerOffset == 0xFFFF_FFFF) {
            return "a size or offset of 0xFFFFFFFF without a zip64 extra to give the real one"
        }
        return nil
    }
}
