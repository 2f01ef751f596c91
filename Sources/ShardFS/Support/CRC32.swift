import CZlib

/// CRC-32 (IEEE 802.3, the zip polynomial), computed by zlib.
public struct CRC32: Sendable {
    public private(set) var value: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        var crc = UInt(value)
        var offset = 0
        // zlib takes a 32-bit length.
        while offset < bytes.count {
            let count = min(bytes.count - offset, 1 << 30)
            crc = crc32(crc, base.assumingMemoryBound(to: UInt8.self) + offset, UInt32(count))
            offset += count
        }
        value = UInt32(truncatingIfNeeded: crc)
    }

    /// The CRC of `a` followed by `lengthOfB` bytes whose CRC is `b`
    /// (zlib's crc32_combine): a file's CRC from its parts' without a pass.
    public static func combine(_ a: UInt32, _ b: UInt32, lengthOfB: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: crc32_combine(UInt(a), UInt(b), lengthOfB))
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32()
        bytes.withUnsafeBytes { crc.update($0) }
        return crc.value
    }
}
