import Testing
@testable import ShardFS

/// Element conversion with torch's rounding (docs/formats/nxd-layout.md, "Output dtype":
/// widening exact, narrowing round-to-nearest-even). Expected bit patterns are
/// worked out by hand.
@Suite struct DTypeConversionTests {
    /// Converts `input` (raw little-endian element bytes of `from`) to `to`.
    func convert(_ input: [UInt8], _ from: DType, _ to: DType) -> [UInt8] {
        let count = input.count / from.size
        var output = [UInt8](repeating: 0xEE, count: count * to.size)
        input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { destination in
                DTypeConversion.convert(source.baseAddress!, from, destination.baseAddress!, to, count: count)
            }
        }
        return output
    }

    func f32ToBF16(_ bits: [Int]) -> [Int] {
        let out = convert(bits.flatMap(le32), .float32, .bfloat16)
        return stride(from: 0, to: out.count, by: 2).map { readLE(out, $0, 2) }
    }

    func f32ToF16(_ values: [Float]) -> [Int] {
        let out = convert(values.flatMap { le32(Int($0.bitPattern)) }, .float32, .float16)
        return stride(from: 0, to: out.count, by: 2).map { readLE(out, $0, 2) }
    }

    @Test func bfloat16ToFloat32IsExact() {
        // Every bfloat16 bit pattern (NaNs and subnormals too) widens to bits << 16.
        let all = (0..<65536).flatMap(le16)
        let out = convert(all, .bfloat16, .float32)
        let expected = (0..<65536).flatMap { le32($0 << 16) }
        expectSameBytes(out, expected, "bf16 -> f32")
    }

    @Test func float32ToBFloat16RoundsToNearestEven() {
        let cases: [(Int, Int)] = [
            (0x3F80_0000, 0x3F80),  // 1.0 exact
            (0x3F80_8000, 0x3F80),  // tie, even stays
            (0x3F81_8000, 0x3F82),  // tie, odd rounds up to even
            (0x3F80_8001, 0x3F81),  // above the tie
            (0x3F80_7FFF, 0x3F80),  // below the tie
            (0xBF81_8000, 0xBF82),  // negative tie
            (0x3FFF_8000, 0x4000),  // carry into the exponent
            (0x7F7F_FFFF, 0x7F80),  // float32 max rounds to infinity
            (0x7F80_0000, 0x7F80),  // +inf
            (0xFF80_0000, 0xFF80),  // -inf
            (0x8000_0000, 0x8000),  // -0
            (0x0000_8000, 0x0000),  // subnormal tie, even
            (0x0001_8000, 0x0002),  // subnormal tie, odd
            (0x7FC0_0000, 0x7FC0),  // NaN
            (0x7F80_0001, 0x7FC0),  // signalling NaN
            (0xFFC0_0001, 0x7FC0),  // negative NaN: torch writes 0x7FC0 for every NaN
            (0x7FFF_FFFF, 0x7FC0),  // NaN that would carry
        ]
        #expect(f32ToBF16(cases.map(\.0)) == cases.map(\.1))
    }

    @Test func float32ToFloat16() {
        let cases: [(Float, Int)] = [
            (1.0, 0x3C00), (-2.0, 0xC000), (0.5, 0x3800), (65504, 0x7BFF),
            (65520, 0x7C00),                 // halfway to the next binade: rounds to infinity
            (65519, 0x7BFF),
            (0.1, 0x2E66), (1.0 / 3.0, 0x3555),
            (5.960_464_477_539_063e-8, 0x0001),  // 2^-24, the smallest subnormal
            (2.980_232_238_769_531_2e-8, 0x0000), // 2^-25: tie to even (0)
            (1e-8, 0x0000), (-0.0, 0x8000),
            (1.000_488_281_25, 0x3C00),      // 1 + 2^-11: tie, even stays
            (1.001_464_843_75, 0x3C02),      // 1 + 3*2^-11: tie, odd rounds up
            (Float.infinity, 0x7C00), (-Float.infinity, 0xFC00),
        ]
        #expect(f32ToF16(cases.map(\.0)) == cases.map(\.1))
        let nan = f32ToF16([.nan])[0]
        #expect(nan & 0x7C00 == 0x7C00 && nan & 0x03FF != 0)
    }

    @Test func otherConversions() {
        // float16 -> float32: exact.
        let f16 = [0x3C00, 0xC000, 0x0001, 0x7BFF, 0x7C00].flatMap(le16)
        #expect(convert(f16, .float16, .float32) == [Float(1), -2, 5.960_464_477_539_063e-8, 65504, .infinity]
            .flatMap { le32(Int($0.bitPattern)) })
        // bfloat16 -> float64: exact.
        #expect(convert([0x3F80, 0xC040].flatMap(le16), .bfloat16, .float64) == [1.0, -3.0].flatMap { le64(Int(bitPattern: UInt(Double($0).bitPattern))) })
        // float32 -> float64 -> float32 round trip; float64 -> bfloat16 via float32.
        let f32: [Float] = [1.5, -0.25, 3.140_625]
        let f64 = convert(f32.flatMap { le32(Int($0.bitPattern)) }, .float32, .float64)
        #expect(f64 == f32.flatMap { le64(Int(bitPattern: UInt(Double($0).bitPattern))) })
        #expect(convert(f64, .float64, .float32) == f32.flatMap { le32(Int($0.bitPattern)) })
        #expect(convert(f64, .float64, .bfloat16) == [0x3FC0, 0xBE80, 0x4049].flatMap(le16))
        // Same dtype: a copy.
        #expect(convert([1, 2, 3, 4], .bfloat16, .bfloat16) == [1, 2, 3, 4])
    }
}
