/// One element of a tensor, as its bytes, told to a person: its value in
/// decimal (the shortest text that reads back to the same element of its
/// dtype) and its bits in hex, since a bit-exact comparison can differ in
/// bits a decimal hides (a NaN's payload, -0 against 0).
public struct ElementValue: Equatable, Sendable {
    public let dtype: DType
    /// The element's bits, little-endian as stored.
    public let bits: UInt64

    public init(dtype: DType, bits: UInt64) {
        self.dtype = dtype
        self.bits = bits
    }

    /// The element at `pointer` (little-endian, `dtype.size` bytes).
    public init(dtype: DType, at pointer: UnsafeRawPointer) {
        var bits: UInt64 = 0
        for i in 0..<dtype.size { bits |= UInt64(pointer.load(fromByteOffset: i, as: UInt8.self)) << (8 * i) }
        self.init(dtype: dtype, bits: bits)
    }

    /// `0x3f80` for bfloat16 1.0: as many hex digits as the dtype has.
    public var hex: String {
        let digits = String(bits, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 2 * dtype.size - digits.count)) + digits
    }

    /// The value in decimal: `0.01233`, `-inf`, `nan`.
    public var decimal: String {
        switch dtype {
        case .float64: return ElementValue.text(Double(bitPattern: bits))
        case .float32: return ElementValue.text(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))
        case .bfloat16, .float16:
            let value = widened
            guard value.isFinite else { return ElementValue.text(value) }
            // Float's shortest text holds more digits than a 16-bit value
            // has: use the fewest significant digits that read back to it.
            for digits in 1...9 {
                let text = ElementValue.significant(value, digits: digits)
                if let parsed = Float(text), narrowed(parsed) == bits { return text }
            }
            return ElementValue.text(value)
        }
    }

    /// `decimal (hex)`, as reports show a value.
    public var description: String { "\(decimal) (\(hex))" }

    /// A 16-bit element as the float32 it widens to exactly.
    private var widened: Float {
        switch dtype {
        case .bfloat16: return Float(bitPattern: UInt32(truncatingIfNeeded: bits) << 16)
        case .float16: return Float(Float16(bitPattern: UInt16(truncatingIfNeeded: bits)))
        case .float32: return Float(bitPattern: UInt32(truncatingIfNeeded: bits))
        case .float64: return Float(Double(bitPattern: bits))
        }
    }

    /// `value` in this 16-bit dtype, rounded to nearest even, as bits.
    private func narrowed(_ value: Float) -> UInt64 {
        switch dtype {
        case .bfloat16: return UInt64(DTypeConversion.bfloat16Bits(value))
        case .float16: return UInt64(Float16(value).bitPattern)
        default: return bits
        }
    }

    private static func text<F: BinaryFloatingPoint & CustomStringConvertible>(_ value: F) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value < 0 ? "-inf" : "inf" }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        return text
    }

    /// `value` rounded to `digits` significant decimal digits, written
    /// plainly (`0.0123`) or in exponent form for very small or large values.
    static func significant(_ value: Float, digits: Int) -> String {
        if value == 0 { return value.sign == .minus ? "-0" : "0" }
        let magnitude = Double(value.magnitude)
        var exponent = Int((magnitude.log10Floor))
        var scale = power10(digits - 1 - exponent)
        var mantissa = (magnitude * scale).rounded()
        if mantissa >= power10(digits) {  // 9.99 rounded up to 10.0
            exponent += 1
            scale = power10(digits - 1 - exponent)
            mantissa = (magnitude * scale).rounded()
        }
        var digitText = String(Int(mantissa))
        let sign = value.sign == .minus ? "-" : ""
        if exponent < -5 || exponent >= 9 {
            let head = String(digitText.removeFirst())
            let tail = digitText.trimmingTrailingZeros
            return sign + head + (tail.isEmpty ? "" : "." + tail) + "e" + (exponent < 0 ? "-" : "+") + String(abs(exponent))
        }
        if exponent < 0 {
            let fraction = (String(repeating: "0", count: -exponent - 1) + digitText).trimmingTrailingZeros
            return sign + "0." + fraction
        }
        let whole = exponent + 1
        if digitText.count <= whole { return sign + digitText + String(repeating: "0", count: whole - digitText.count) }
        let fraction = String(digitText.dropFirst(whole)).trimmingTrailingZeros
        return sign + String(digitText.prefix(whole)) + (fraction.isEmpty ? "" : "." + fraction)
    }

    private static func power10(_ n: Int) -> Double {
        var result = 1.0
        if n >= 0 { for _ in 0..<n { result *= 10 } } else { for _ in 0..<(-n) { result /= 10 } }
        return result
    }
}

extension Double {
    /// floor(log10(self)) for a positive finite value, exact at powers of ten.
    fileprivate var log10Floor: Double {
        var exponent = 0.0
        var value = self
        while value >= 10 { value /= 10; exponent += 1 }
        while value < 1 { value *= 10; exponent -= 1 }
        return exponent
    }
}

extension String {
    fileprivate var trimmingTrailingZeros: String {
        var s = Substring(self)
        while s.last == "0" { s = s.dropLast() }
        return String(s)
    }
}
