/// 64-bit FNV-1a: a stable, dependency-free hash for names that must come out
/// the same on every run and machine (serialization ids, log file names).
enum FNV1a {
    static let offsetBasis: UInt64 = 0xCBF2_9CE4_8422_2325

    static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes, basis: UInt64 = offsetBasis) -> UInt64 {
        var hash = basis
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }
}
