/// Plain Python values as CPython's C pickler (protocol 2, which torch.save
/// uses) writes them: what an optimizer's `param_groups` hold (floats,
/// bools, None, lists such as `betas`) around its tensors.
extension PickleWriter {
    static let none: UInt8 = 0x4E           // N
    static let binfloat: UInt8 = 0x47       // G
    static let emptyList: UInt8 = 0x5D      // ]
    static let append: UInt8 = 0x61         // a
    static let appends: UInt8 = 0x65        // e

    /// `BINFLOAT`: the double, big-endian. Floats are never memoized.
    public mutating func float(_ v: Double) {
        op(PickleWriter.binfloat)
        withUnsafeBytes(of: v.bitPattern.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A list as `batch_list_exact` writes it: `EMPTY_LIST`, memoized; one
    /// item as `APPEND`; more as `MARK ... APPENDS` batches of up to 1000.
    public mutating func list<Item>(_ items: [Item], _ writeItem: (inout PickleWriter, Item) -> Void) {
        op(PickleWriter.emptyList)
        put()
        if items.count == 1 {
            writeItem(&self, items[0])
            op(PickleWriter.append)
            return
        }
        var start = 0
        while start < items.count {
            let batch = items[start..<min(start + 1000, items.count)]
            op(PickleWriter.mark)
            for item in batch { writeItem(&self, item) }
            op(PickleWriter.appends)
            start += batch.count
        }
    }

    /// A value read from a pickle, written back: None, a bool, an int, a
    /// float, a string (one object per value: the strings optimizers hold
    /// are interned names), a list, a tuple or a dict of these. Returns false,
    /// writing nothing, for anything else (tensors, storages, globals), which
    /// have writers of their own.
    @discardableResult
    public mutating func value(_ v: PickleValue) -> Bool {
        guard PickleWriter.isPlain(v) else { return false }
        switch v {
        case .none: op(PickleWriter.none)
        case .bool(let b): op(b ? PickleWriter.newtrue : PickleWriter.newfalse)
        case .int(let i): int(i)
        case .float(let f): float(f)
        case .string(let s): sharedString(s)
        case .list(let items): list(items) { p, item in p.value(item) }
        case .tuple(let items): tuple(count: items.count) { p in for item in items { p.value(item) } }
        case .dict(let items, _): dict(items) { p, item in p.value(item.key); p.value(item.value) }
        default: return false
        }
        return true
    }

    /// Whether `value(_:)` can write `v` (and everything inside it).
    public static func isPlain(_ v: PickleValue) -> Bool {
        switch v {
        case .none, .bool, .int, .float, .string: return true
        case .list(let items), .tuple(let items): return items.allSatisfy(isPlain)
        case .dict(let items, let ordered): return !ordered && items.allSatisfy { isPlain($0.key) && isPlain($0.value) }
        default: return false
        }
    }
}
