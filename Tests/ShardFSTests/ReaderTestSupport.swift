import Testing
@testable import ShardFS

// Helpers for the reader tests (ZipDirectory, PickleReader, TorchSaveReader):
// in-memory files, element decoding, and a zip builder written from the
// zip framing of docs/formats/pt.md alone.

/// A read closure over an in-memory file. The readers must check bounds
/// before reading, so a read outside the file is a test failure (and a
/// refusal, so the reader still stops).
func memoryReader(_ bytes: [UInt8], file: String = "test") -> TorchSaveReader.Read {
    return { (offset: Int, count: Int) throws(ShardFSError) -> [UInt8] in
        guard offset >= 0, count >= 0, offset <= bytes.count - count else {
            Issue.record("read(\(offset), \(count)) outside the \(bytes.count)-byte file")
            throw ShardFSError.badSource(file: file, reason: "test: read outside the file")
        }
        return Array(bytes[offset..<offset + count])
    }
}

func zipDirectory(_ bytes: [UInt8], file: String = "test.pt") throws(ShardFSError) -> ZipDirectory {
    try ZipDirectory(file: file, fileSize: bytes.count, read: memoryReader(bytes, file: file))
}

/// The element of `dtype` at byte `offset` of `bytes`, as a Double.
func element(_ bytes: [UInt8], at offset: Int, _ dtype: DType) -> Double {
    let bits = UInt64(readLE(bytes, offset, dtype.size))
    switch dtype {
    case .bfloat16: return Double(Float(bitPattern: UInt32(bits) << 16))
    case .float16: return Double(Float16(bitPattern: UInt16(bits)))
    case .float32: return Double(Float(bitPattern: UInt32(bits)))
    case .float64: return Double(bitPattern: bits)
    }
}

/// The element at `index` of a located tensor, by its strides.
func element(_ bytes: [UInt8], _ t: LocatedTensor, _ index: [Int]) -> Double {
    let elementOffset = zip(index, t.strides).reduce(0) { $0 + $1.0 * $1.1 }
    return element(bytes, at: t.offset + elementOffset * t.dtype.size, t.dtype)
}

/// A file written by ShardFS's torch.save writer (not the code under test:
/// a way to put a chosen pickle and storages in a valid archive).
func torchSaveFile(_ fileName: String, pickle: [UInt8], storages: [[UInt8]]) throws -> [UInt8] {
    try readWhole(TorchSaveFile.file(fileName: fileName, pickle: pickle, storages: storages.map { [.literal($0)] },
                                     serializationID: String(repeating: "1", count: 40)))
}

/// A zip archive built field by field (docs/formats/pt.md, "Zip framing"), with
/// knobs to make it wrong in one way at a time.
struct ZipBuilder {
    struct Entry {
        var name: [UInt8]
        var data: [UInt8]
        var flags = 0x0808
        var method = 0
        var crc = 0
        /// The name in the local header, when it should differ.
        var localName: [UInt8]?
        /// Put the size and header offset in a zip64 extra (0xFFFFFFFF in the fixed fields).
        var zip64 = false
        /// Added to the compressed size in the central directory only.
        var packedSizeDelta = 0
        /// Added to both sizes in the central directory only.
        var sizeDelta = 0

        init(_ name: String, _ data: [UInt8]) {
            self.name = Array(name.utf8)
            self.data = data
        }
    }

    var entries: [Entry]
    var zip64End = true
    var comment: [UInt8] = []
    /// The classic end record's "this disk" field.
    var disk = 0

    init(_ entries: [Entry]) { self.entries = entries }

    func bytes() -> [UInt8] {
        var out: [UInt8] = []
        var offsets: [Int] = []
        for e in entries {
            offsets.append(out.count)
            let name = e.localName ?? e.name
            out += le32(0x0403_4B50) + le16(0) + le16(e.flags) + le16(e.method) + le16(0) + le16(0)
            out += le32(0) + le32(0) + le32(0) + le16(name.count) + le16(0) + name + e.data
        }
        let directoryOffset = out.count
        for (e, offset) in zip(entries, offsets) {
            let size = e.data.count + e.sizeDelta, packed = size + e.packedSizeDelta
            let extra = e.zip64 ? le16(1) + le16(24) + le64(size) + le64(packed) + le64(offset) : []
            out += le32(0x0201_4B50) + le16(0) + le16(0) + le16(e.flags) + le16(e.method) + le16(0) + le16(0) + le32(e.crc)
            out += e.zip64 ? le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) : le32(packed) + le32(size)
            out += le16(e.name.count) + le16(extra.count) + le16(0) + le16(0) + le16(0) + le32(0)
            out += (e.zip64 ? le32(0xFFFF_FFFF) : le32(offset)) + e.name + extra
        }
        let directorySize = out.count - directoryOffset
        if zip64End {
            let end64 = out.count
            out += le32(0x0606_4B50) + le64(44) + le16(0x031E) + le16(0x002D) + le32(0) + le32(0)
            out += le64(entries.count) + le64(entries.count) + le64(directorySize) + le64(directoryOffset)
            out += le32(0x0706_4B50) + le32(0) + le64(end64) + le32(1)
        }
        out += le32(0x0605_4B50) + le16(disk) + le16(0) + le16(entries.count) + le16(entries.count)
        out += le32(directorySize) + le32(directoryOffset) + le16(comment.count) + comment
        return out
    }
}
