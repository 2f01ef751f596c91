/// Where a zip archive's central directory is, as its end records say.
struct ZipDirectoryLocation: Equatable {
    let offset: Int
    let size: Int
    let count: Int
}

/// Finds and checks the end records of a zip archive: the end record
/// (`PK\5\6`) and, when present, the zip64 locator (`PK\6\7`) and zip64 end
/// record (`PK\6\6`), which torch.save writes in every file (docs/formats/pt.md).
/// Reads only the end of the file.
enum ZipEndRecords {
    static let endSignature: UInt64 = 0x0605_4B50
    static let locatorSignature: UInt64 = 0x0706_4B50
    static let end64Signature: UInt64 = 0x0606_4B50
    static let endLength = 22
    static let locatorLength = 20
    static let end64Length = 56
    static let maximumCommentLength = 0xFFFF

    static func locate(file: String, fileSize: Int, maximumEntries: Int, maximumDirectorySize: Int,
                       read: (Int, Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) -> ZipDirectoryLocation {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        guard fileSize >= endLength else {
            throw bad("truncated: \(fileSize) bytes is too short for a zip archive (its end record alone takes \(endLength))")
        }
        // The end record is last but for a comment of up to 65535 bytes, so it
        // is searched backwards; it must be followed by exactly its comment.
        // torch.save writes no comment: the last 22 bytes are tried first
        // (the search would find them first too), sparing a 64 KiB read of
        // each of a tag's 60,000 files.
        let last = LittleEndianBytes(try read(fileSize - endLength, endLength))
        let commentless = last.field(0, 4) == endSignature && last.u16(20) == 0
        let tailLength = commentless ? endLength : min(fileSize, endLength + maximumCommentLength)
        let tailStart = fileSize - tailLength
        let tail = commentless ? last : LittleEndianBytes(try read(tailStart, tailLength))
        var found: Int?
        var position = tailLength - endLength
        while position >= 0 {
            if tail.field(position, 4) == endSignature, tail.u16(position + 20) == tailLength - position - endLength {
                found = position
                break
            }
            position -= 1
        }
        guard let endInTail = found else {
            throw bad("truncated or not a zip archive: no end-of-central-directory record (PK\\5\\6) at the end of its \(fileSize) bytes")
        }
        let endOffset = tailStart + endInTail
        // Every field is inside the tail: the search checked 22 bytes.
        let disk = tail.u16(endInTail + 4) ?? 0, directoryDisk = tail.u16(endInTail + 6) ?? 0
        let countOnDisk = tail.u16(endInTail + 8) ?? 0, count = tail.u16(endInTail + 10) ?? 0
        let size = tail.u32(endInTail + 12) ?? 0, offset = tail.u32(endInTail + 16) ?? 0

        var location = ZipDirectoryLocation(offset: offset, size: size, count: count)
        var directoryEnd = endOffset
        if endOffset >= locatorLength,
           case let locator = LittleEndianBytes(try read(endOffset - locatorLength, locatorLength)),
           locator.field(0, 4) == locatorSignature {
            let locatorOffset = endOffset - locatorLength
            let (zip64, end64Offset) = try zip64Location(locator, locatorOffset: locatorOffset, file: file, read: read)
            // The classic end record either agrees or holds its field's maximum.
            func agrees(_ value: Int, _ maximum: Int, _ real: Int) -> Bool { value == maximum || value == real }
            guard agrees(count, 0xFFFF, zip64.count), agrees(countOnDisk, 0xFFFF, zip64.count),
                  agrees(size, 0xFFFF_FFFF, zip64.size), agrees(offset, 0xFFFF_FFFF, zip64.offset),
                  disk == 0 || disk == 0xFFFF, directoryDisk == 0 || directoryDisk == 0xFFFF else {
                throw bad("the end record (entries \(count), directory \(size) bytes at \(offset)) contradicts the zip64 end record (entries \(zip64.count), directory \(zip64.size) bytes at \(zip64.offset))")
            }
            location = zip64
            directoryEnd = end64Offset
        } else {
            guard disk == 0, directoryDisk == 0, countOnDisk == count else {
                throw bad("a multi-disk zip archive (disk \(disk), directory on disk \(directoryDisk), \(countOnDisk) of \(count) entries here); torch.save writes one file")
            }
        }

        // torch.save's directory runs up to the end records: anything else
        // means a damaged file (or bytes glued before it).
        guard location.offset <= directoryEnd, location.size <= directoryEnd - location.offset else {
            throw bad("truncated: the central directory (\(location.size) bytes at offset \(location.offset)) runs past the end records at byte \(directoryEnd)")
        }
        guard location.offset + location.size == directoryEnd else {
            throw bad("the central directory (\(location.size) bytes at offset \(location.offset)) ends at byte \(location.offset + location.size), not where the end records begin (byte \(directoryEnd))")
        }
        guard location.count <= maximumEntries else {
            throw bad("the central directory lists \(location.count) records, more than the \(maximumEntries) ShardFS reads")
        }
        guard location.size <= maximumDirectorySize else {
            throw bad("the central directory takes \(location.size) bytes, more than the \(maximumDirectorySize) ShardFS reads")
        }
        guard location.count <= location.size / 46 else {
            throw bad("the central directory (\(location.size) bytes) cannot hold \(location.count) records of at least 46 bytes each")
        }
        return location
    }

    /// The directory location from the zip64 end record the locator points
    /// to, and that record's offset (where the directory must end).
    private static func zip64Location(_ locator: LittleEndianBytes, locatorOffset: Int, file: String,
                                      read: (Int, Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) -> (ZipDirectoryLocation, Int) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        let end64Disk = locator.u32(4) ?? 0, disks = locator.u32(16) ?? 0
        guard end64Disk == 0, disks <= 1 else {
            throw bad("a multi-disk zip archive (zip64 locator: end record on disk \(end64Disk) of \(disks)); torch.save writes one file")
        }
        guard let end64Offset = locator.u64(8), end64Offset <= locatorOffset - end64Length else {
            throw bad("the zip64 locator points to byte \(locator.field(8, 8) ?? 0), where no zip64 end record fits before the locator (byte \(locatorOffset))")
        }
        let end64 = LittleEndianBytes(try read(end64Offset, end64Length))
        guard end64.field(0, 4) == end64Signature else {
            throw bad("no zip64 end record (PK\\6\\6) at byte \(end64Offset), where the zip64 locator points")
        }
        // Record size counts the bytes after its own 12-byte head; the record
        // must end where the locator begins.
        guard let recordSize = end64.u64(4), recordSize >= end64Length - 12,
              recordSize == locatorOffset - end64Offset - 12 else {
            throw bad("the zip64 end record at byte \(end64Offset) gives its size as \(end64.field(4, 8) ?? 0), but the locator follows at byte \(locatorOffset)")
        }
        let disk = end64.u32(16) ?? 0, directoryDisk = end64.u32(20) ?? 0
        guard disk == 0, directoryDisk == 0, let countOnDisk = end64.u64(24), let count = end64.u64(32), countOnDisk == count else {
            throw bad("a multi-disk zip archive (zip64 end record: disk \(disk), directory on disk \(directoryDisk), \(end64.field(24, 8) ?? 0) of \(end64.field(32, 8) ?? 0) entries here); torch.save writes one file")
        }
        guard let size = end64.u64(40), let offset = end64.u64(48) else {
            throw bad("the zip64 end record gives a directory of \(end64.field(40, 8) ?? 0) bytes at \(end64.field(48, 8) ?? 0): beyond any file")
        }
        return (ZipDirectoryLocation(offset: offset, size: size, count: count), end64Offset)
    }
}
