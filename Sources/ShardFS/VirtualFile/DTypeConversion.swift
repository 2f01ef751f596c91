/// Element conversion between the float formats, with torch's rounding:
/// widening is exact; narrowing rounds to nearest even (bfloat16 as torch's
/// `round_to_nearest_even`, NaN to 0x7FC0); conversions between two 16-bit
/// formats and from float64 to a 16-bit format go through float32, as torch's
/// `c10::BFloat16`/`c10::Half` constructors do.
public enum DTypeConversion {
    @inline(__always)
    static func bfloat16Bits(_ f: Float) -> UInt16 {
        if f.isNaN { return 0x7FC0 }
        let bits = f.bitPattern
        let bias = ((bits >> 16) & 1) &+ 0x7FFF
        return UInt16(truncatingIfNeeded: (bits &+ bias) >> 16)
    }

    @inline(__always)
    static func load(_ p: UnsafeRawPointer, _ i: Int, _ t: DType) -> Float {
        switch t {
        case .bfloat16: return Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        case .float16: return Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .float32: return p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
        case .float64: return Float(p.loadUnaligned(fromByteOffset: 8 * i, as: Double.self))
        }
    }

    @inline(__always)
    static func store(_ f: Float, _ p: UnsafeMutableRawPointer, _ i: Int, _ t: DType) {
        switch t {
        case .bfloat16: p.storeBytes(of: bfloat16Bits(f), toByteOffset: 2 * i, as: UInt16.self)
        case .float16: p.storeBytes(of: Float16(f).bitPattern, toByteOffset: 2 * i, as: UInt16.self)
        case .float32: p.storeBytes(of: f, toByteOffset: 4 * i, as: Float.self)
        case .float64: p.storeBytes(of: Double(f), toByteOffset: 8 * i, as: Double.self)
        }
    }

    /// Converts `count` elements from `source` (of `from`) into `destination` (of `to`).
    public static func convert(_ source: UnsafeRawPointer, _ from: DType,
                               _ destination: UnsafeMutableRawPointer, _ to: DType, count: Int) {
        switch (from, to) {
        case _ where from == to:
            destination.copyMemory(from: source, byteCount: count * from.size)
        case (.bfloat16, .float32):
            // The hot path of the tutorial's float32 files: a shift, kept tight.
            let s = source.assumingMemoryBound(to: UInt16.self)
            let d = destination.assumingMemoryBound(to: UInt32.self)
            for i in 0..<count { d[i] = UInt32(s[i]) << 16 }
        case (.float32, .bfloat16):
            let s = source.assumingMemoryBound(to: Float.self)
            let d = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { d[i] = bfloat16Bits(s[i]) }
        case (.float64, .float32):
            for i in 0..<count { store(Float(source.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)), destination, i, .float32) }
        case (_, .float64):
            for i in 0..<count {
                let value: Double = from == .float32
                    ? Double(source.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
                    : Double(load(source, i, from))
                destination.storeBytes(of: value, toByteOffset: 8 * i, as: Double.self)
            }
        default:
            for i in 0..<count { store(load(source, i, from), destination, i, to) }
        }
    }
}
