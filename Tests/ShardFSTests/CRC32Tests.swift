import Testing
@testable import ShardFS

@Suite struct CRC32Tests {
    @Test func checkValue() {
        #expect(CRC32.checksum(bytes("123456789")) == 0xCBF4_3926)
        #expect(CRC32.checksum([]) == 0)
        #expect(CRC32.checksum(bytes("The quick brown fox jumps over the lazy dog")) == 0x414F_A339)
    }

    /// Incremental updates of any split equal the one-shot value, and the
    /// slicing-by-8 path agrees with a bit-by-bit CRC on every length 0...64.
    @Test func incrementalAndEveryLength() {
        var rng = SplitMix64(seed: 42)
        let data = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let whole = CRC32.checksum(data)
        #expect(whole == bitwiseCRC32(data))
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            var crc = CRC32()
            data[..<split].withUnsafeBytes { crc.update($0) }
            data[split...].withUnsafeBytes { crc.update($0) }
            #expect(crc.value == whole, "split at \(split)")
        }
        for length in 0...64 {
            let prefix = Array(data.prefix(length))
            #expect(CRC32.checksum(prefix) == bitwiseCRC32(prefix), "length \(length)")
        }
    }
}
