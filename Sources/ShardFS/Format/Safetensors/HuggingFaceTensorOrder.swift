extension HuggingFaceShards {
    /// The order transformers 5.24's save_pretrained splits a model loaded
    /// with `from_pretrained` in: not its state-dict order but the names
    /// sorted by `dot_natural_key`. Only the split into shards depends on the
    /// order (each file sorts its tensors itself), and only when sharded.
    ///
    /// Why: save_pretrained calls `revert_weight_conversion`, which rebuilds
    /// the state dict sorted by `dot_natural_key` unless the model has no
    /// conversions at all. A model built from a config has none (its
    /// `_weight_conversions` is unset, and the defaults for Llama are empty),
    /// so it keeps `model.state_dict()` order; `from_pretrained` sets
    /// `_weight_conversions` to the empty list, which is not None, so the
    /// sort happens, to a no-op renaming. Re-saving a loaded Llama with
    /// "5KB" shards therefore puts `lm_head.weight` in shard 1, a fresh one
    /// in the last shard.
    ///
    /// `dot_natural_key`: the name split on "."; an all-digit part sorts before
    /// any other, by value; any other part by its text without trailing
    /// digits (code-point order), then by those digits' value, a part without
    /// them first; a name that is a prefix of another, in parts, first.
    /// Python's sort is stable: names with equal keys ("a.1", "a.01") keep
    /// their order. (Python's `isdigit` also takes non-ASCII digits; here
    /// only ASCII ones count as digits.)
    public static func dotNaturalOrder(_ tensors: [HFTensor]) -> [HFTensor] {
        let keys = tensors.map { dotNaturalKey($0.name) }
        let order = tensors.indices.sorted { a, b in
            switch compare(keys[a], keys[b]) {
            case .less: return true
            case .greater: return false
            case .equal: return a < b
            }
        }
        return order.map { tensors[$0] }
    }

    /// One part of a `dot_natural_key`, its text as code points.
    enum KeyPart {
        /// An all-digit part: its digits, leading zeros removed.
        case number([UInt32])
        /// Text and its trailing digits (leading zeros removed), if any.
        case text([UInt32], trailing: [UInt32]?)
    }

    static func dotNaturalKey(_ name: String) -> [KeyPart] {
        let scalars = name.unicodeScalars.map(\.value)
        return scalars.split(separator: 0x2E, omittingEmptySubsequences: false).map { part in
            let isDigit = { (c: UInt32) in (0x30...0x39).contains(c) }
            if !part.isEmpty, part.allSatisfy(isDigit) { return .number(withoutLeadingZeros(part)) }
            let digitCount = part.reversed().prefix(while: isDigit).count
            let text = Array(part.dropLast(digitCount))
            return .text(text, trailing: digitCount == 0 ? nil : withoutLeadingZeros(part.suffix(digitCount)))
        }
    }

    private static func withoutLeadingZeros(_ digits: ArraySlice<UInt32>) -> [UInt32] {
        Array(digits.drop(while: { $0 == 0x30 }))
    }

    private enum Order { case less, equal, greater }

    /// Python's comparison of the key lists (and of the tuples within them).
    private static func compare(_ a: [KeyPart], _ b: [KeyPart]) -> Order {
        for (x, y) in zip(a, b) {
            let order = compare(x, y)
            if order != .equal { return order }
        }
        return a.count < b.count ? .less : a.count > b.count ? .greater : .equal
    }

    private static func compare(_ x: KeyPart, _ y: KeyPart) -> Order {
        switch (x, y) {
        case let (.number(m), .number(n)): return compareNumbers(m, n)
        case (.number, .text): return .less
        case (.text, .number): return .greater
        case let (.text(s, sDigits), .text(t, tDigits)):
            if s != t { return s.lexicographicallyPrecedes(t) ? .less : .greater }
            switch (sDigits, tDigits) {
            case (nil, nil): return .equal
            case (nil, _): return .less
            case (_, nil): return .greater
            case let (m?, n?): return compareNumbers(m, n)
            }
        }
    }

    /// Decimal digit strings without leading zeros, by value, of any length.
    private static func compareNumbers(_ m: [UInt32], _ n: [UInt32]) -> Order {
        if m.count != n.count { return m.count < n.count ? .less : .greater }
        return m == n ? .equal : (m.lexicographicallyPrecedes(n) ? .less : .greater)
    }
}
