/// Little-endian fields of a byte array read at bounds-checked offsets: the
/// zip reader's structures come from untrusted files, so an out-of-range
/// field reads as nil instead of trapping.
struct LittleEndianBytes {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// The unsigned `count`-byte field at `offset` (count <= 8), or nil when it
    /// does not lie inside the bytes.
    func field(_ offset: Int, _ count: Int) -> UInt64? {
        guard offset >= 0, count >= 0, count <= 8, offset <= bytes.count - count else { return nil }
        var value: UInt64 = 0
        for i in 0..<count { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return value
    }

    func u16(_ offset: Int) -> Int? { field(offset, 2).map { Int($0) } }
    func u32(_ offset: Int) -> Int? { field(offset, 4).map { Int($0) } }

    /// An 8-byte field as an Int; nil when out of range or at or above 2^63
    /// (no file is that large, so such a value is simply wrong).
    func u64(_ offset: Int) -> Int? {
        guard let value = field(offset, 8), value <= UInt64(Int.max) else { return nil }
        return Int(value)
    }

    func slice(_ offset: Int, _ count: Int) -> ArraySlice<UInt8>? {
        guard offset >= 0, count >= 0, offset <= bytes.count - count else { return nil }
        return bytes[offset..<offset + count]
    }
}
