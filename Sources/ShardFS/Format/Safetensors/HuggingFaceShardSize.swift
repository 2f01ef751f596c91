extension HuggingFaceShards {
    /// `--max-shard-size`, as save_pretrained takes `max_shard_size`: a plain
    /// count of bytes (its `int` form, "1000"), or a string that
    /// huggingface_hub 2.4's `parse_size_to_int` accepts:
    /// - the text stripped of (Python's) whitespace; its last two characters,
    ///   upper-cased, the unit: TB, GB, MB or KB, decimal (10^12 ... 10^3).
    ///   Nothing else: not "GiB" (its last two are "IB"), not "B", not "5G";
    /// - the rest, stripped again, a Python `float` ("5", "1.5", ".5", "1e3",
    ///   "1_000", " 5 "); the size is `int(value * multiplier)`, the double
    ///   product truncated toward zero ("1.1GB" = 1100000000).
    /// Older transformers read sizes itself (`convert_file_size_to_int`), and
    /// took "GiB"/"MiB"/"KiB" as powers of 2; save_pretrained in 5.x hands the
    /// string to huggingface_hub, which refuses them, and so does this.
    /// Python also accepts what this refuses as no sensible size: a negative
    /// value (save_pretrained would then put each tensor in a file of its
    /// own) and one past Int.max. "inf" and "nan" fail in Python too.
    public static func parseSize(_ text: String) throws(ShardFSError) -> Int {
        func bad(_ reason: String) -> ShardFSError {
            .badLayout(flag: "--max-shard-size", reason: "\"\(text)\": \(reason)")
        }
        if !text.isEmpty, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) {
            guard let bytes = Int(text) else { throw bad("too large") }
            return bytes
        }
        let scalars = Array(pythonStrip(Substring(text)).unicodeScalars)
        let unitText = String(String.UnicodeScalarView(scalars.suffix(2)))
        guard let multiplier = sizeUnits[unitText.uppercased()] else {
            throw bad("the unit must be TB, GB, MB or KB (10^12, 10^9, 10^6, 10^3 bytes), as huggingface_hub reads it, e.g. \"5GB\", or a whole number of bytes")
        }
        let valueText = pythonStrip(Substring(String(String.UnicodeScalarView(scalars.dropLast(2)))))
        guard let value = pythonFloat(valueText) else { throw bad("\"\(valueText)\" is not a number") }
        let product = value * Double(multiplier)
        // int() truncates toward zero: anything above -1 is a size of 0.
        guard product > -1 else { throw bad("a shard size cannot be negative") }
        guard product < 0x1p63 else { throw bad("too large") }
        return Int(product)
    }

    /// huggingface_hub's `SIZE_UNITS`.
    private static let sizeUnits = ["TB": 1_000_000_000_000, "GB": 1_000_000_000, "MB": 1_000_000, "KB": 1_000]

    /// Python's `str.strip()`: the characters `str.isspace()` holds true.
    private static func pythonStrip(_ text: Substring) -> Substring {
        let space: Set<UInt32> = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
                                  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009,
                                  0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
        var scalars = text.unicodeScalars[...]
        while let first = scalars.first, space.contains(first.value) { scalars.removeFirst() }
        while let last = scalars.last, space.contains(last.value) { scalars.removeLast() }
        return Substring(scalars)
    }

    /// Python's `float(text)` for finite values, nil where it raises or gives
    /// inf/nan (which `int()` then refuses). Grammar:
    /// `[sign] (digits ["." [digits]] | "." digits) [("e"|"E") [sign] digits]`,
    /// digits being decimal digits with single underscores between them; any
    /// Unicode decimal digit counts (Python reads "١" as 1). The digits are
    /// then parsed as a correctly rounded double, as Python does.
    private static func pythonFloat(_ text: Substring) -> Double? {
        var ascii: [UInt8] = []
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                ascii.append(UInt8(scalar.value))
            } else if scalar.properties.numericType == .decimal, let digit = scalar.properties.numericValue {
                ascii.append(UInt8(ascii: "0") + UInt8(digit))
            } else {
                return nil
            }
        }
        var p = 0
        func isDigit(_ i: Int) -> Bool { i < ascii.count && (0x30...0x39).contains(ascii[i]) }
        /// Digits with single underscores between them; false if none or a stray underscore.
        func digitPart() -> Bool {
            guard isDigit(p) else { return false }
            while isDigit(p) || (p < ascii.count && ascii[p] == UInt8(ascii: "_") && isDigit(p + 1)) { p += 1 }
            return true
        }
        if p < ascii.count, ascii[p] == UInt8(ascii: "+") || ascii[p] == UInt8(ascii: "-") { p += 1 }
        let integer = digitPart()
        if p < ascii.count, ascii[p] == UInt8(ascii: ".") {
            p += 1
            guard digitPart() || integer else { return nil }
        } else if !integer {
            return nil
        }
        if p < ascii.count, ascii[p] == UInt8(ascii: "e") || ascii[p] == UInt8(ascii: "E") {
            p += 1
            if p < ascii.count, ascii[p] == UInt8(ascii: "+") || ascii[p] == UInt8(ascii: "-") { p += 1 }
            guard digitPart() else { return nil }
        }
        guard p == ascii.count else { return nil }
        guard let value = Double(String(decoding: ascii.filter { $0 != UInt8(ascii: "_") }, as: UTF8.self)),
              value.isFinite else { return nil }
        return value
    }
}
