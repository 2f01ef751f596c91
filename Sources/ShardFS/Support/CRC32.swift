import CGather
import CZlib

/// CRC-32 (IEEE 802.3, the zip polynomial): by carry-less multiplication
/// where the CPU has it (`shardfs_crc32`, checked against zlib for every
/// length), else by zlib. zlib's took a fifth of a float32 convert.
public struct CRC32: Sendable {
    public private(set) var value: UInt32 = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        value = shardfs_crc32(value, base, bytes.count)
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
