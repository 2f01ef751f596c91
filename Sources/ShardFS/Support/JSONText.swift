/// JSON string literals as two writers ShardFS reproduces byte for byte spell
/// them. JSON allows many spellings of one string; each output format must
/// match its reference writer's, so each writer's rule is kept here, apart.
public enum JSONText {
    /// A quoted string as serde_json (the safetensors header writer, in Rust)
    /// writes it: `"` and `\` escaped, the control characters below 0x20 as
    /// `\b \t \n \f \r` or `\u00xx` (lowercase hex), everything else, DEL and
    /// non-ASCII included, as raw UTF-8.
    public static func serde(_ string: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for byte in string.utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x00..<0x20: out += controlEscape(byte)
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return out
    }

    /// A quoted string as Python's `json.dumps` writes it with its default
    /// `ensure_ascii=True` (transformers' index file): printable ASCII as is
    /// (but `"` and `\` escaped), the five short escapes, and every other
    /// scalar, DEL and non-ASCII included, as `\uxxxx` in lowercase hex,
    /// scalars past U+FFFF as a UTF-16 surrogate pair.
    public static func python(_ string: String) -> [UInt8] {
        var out: [UInt8] = [0x22]
        for scalar in string.unicodeScalars {
            let v = scalar.value
            switch v {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x00..<0x20: out += controlEscape(UInt8(v))
            case 0x20..<0x7F: out.append(UInt8(v))
            case 0x7F...0xFFFF: out += unicodeEscape(v)
            default:
                let u = v - 0x1_0000
                out += unicodeEscape(0xD800 + (u >> 10)) + unicodeEscape(0xDC00 + (u & 0x3FF))
            }
        }
        out.append(0x22)
        return out
    }

    /// The escape both writers use for a byte below 0x20.
    private static func controlEscape(_ byte: UInt8) -> [UInt8] {
        switch byte {
        case 0x08: return Array("\\b".utf8)
        case 0x09: return Array("\\t".utf8)
        case 0x0A: return Array("\\n".utf8)
        case 0x0C: return Array("\\f".utf8)
        case 0x0D: return Array("\\r".utf8)
        default: return unicodeEscape(UInt32(byte))
        }
    }

    private static func unicodeEscape(_ value: UInt32) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        return [0x5C, UInt8(ascii: "u")] + [12, 8, 4, 0].map { hex[Int((value >> UInt32($0)) & 0xF)] }
    }
}
