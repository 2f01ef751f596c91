/// Writes pickle protocol 2 exactly as CPython's pickler does for the objects
/// `torch.save` pickles: same opcodes, same memo numbering.
///
/// Python memoizes by object identity. Objects that are one object in the
/// pickled data (a class, an interned string such as `'storage'`) are written
/// through `shared(_:)`, which emits `BINGET` after first use; everything else
/// is new each time and gets a fresh `BINPUT`.
public struct PickleWriter {
    /// The bytes written (since the last piece, with `pieceSize`).
    public internal(set) var bytes: [UInt8] = [0x80, 0x02]  // PROTO 2
    private var memoCount = 0
    private var sharedMemo: [Shared: Int] = [:]

    /// What makes two writes one Python object. Kept apart rather than
    /// spelled as one string: a DCP `.metadata` names a class or a field
    /// a million times, and building "global module.name" for each lookup
    /// was most of its pickling.
    private enum Shared: Hashable {
        case global(module: String, name: String)
        case string(String)
        case other(String)
    }
    /// Bytes written before `bytes`, in pieces (`init(pieceSize:)`).
    private var pieces: [[UInt8]] = []
    private let pieceSize: Int

    public init() {
        pieceSize = .max
    }

    /// A writer that keeps what it writes in pieces of about `pieceSize`
    /// bytes (`finishInPieces`): a pickle of tens of megabytes (a 70B
    /// training state's DCP `.metadata`) grown in one array is, at each
    /// doubling, held twice.
    public init(pieceSize: Int) {
        self.pieceSize = pieceSize
        bytes.reserveCapacity(min(pieceSize, 1 << 20) + 4096)
    }

    /// Starts a new piece once this one is full: nothing written is ever
    /// looked at again (no opcode refers back by position), so any op
    /// boundary may end a piece.
    private mutating func endPieceIfFull() {
        guard bytes.count >= pieceSize else { return }
        pieces.append(bytes)
        bytes = []
        bytes.reserveCapacity(pieceSize + 4096)
    }

    public mutating func op(_ code: UInt8) {
        endPieceIfFull()
        bytes.append(code)
    }

    // Opcodes used here, named as in pickletools.
    static let mark: UInt8 = 0x28           // (
    static let stop: UInt8 = 0x2E           // .
    static let binint: UInt8 = 0x4A         // J
    static let binint1: UInt8 = 0x4B        // K
    static let binint2: UInt8 = 0x4D        // M
    static let binpersid: UInt8 = 0x51      // Q
    static let reduce: UInt8 = 0x52         // R
    static let binunicode: UInt8 = 0x58     // X
    static let emptyTuple: UInt8 = 0x29     // )
    static let global: UInt8 = 0x63         // c
    static let emptyDict: UInt8 = 0x7D      // }
    static let binget: UInt8 = 0x68         // h
    static let longBinget: UInt8 = 0x6A     // j
    static let binput: UInt8 = 0x71         // q
    static let longBinput: UInt8 = 0x72     // r
    static let setitem: UInt8 = 0x73        // s
    static let tuple: UInt8 = 0x74          // t
    static let setitems: UInt8 = 0x75       // u
    static let newobj: UInt8 = 0x81
    static let build: UInt8 = 0x62          // b
    static let tuple1: UInt8 = 0x85
    static let tuple2: UInt8 = 0x86
    static let tuple3: UInt8 = 0x87
    static let newtrue: UInt8 = 0x88
    static let newfalse: UInt8 = 0x89
    static let long1: UInt8 = 0x8A


    private mutating func appendUInt32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Memoizes the object just written (Python's `memoize`).
    public mutating func put() {
        endPieceIfFull()
        if memoCount < 256 {
            bytes += [PickleWriter.binput, UInt8(memoCount)]
        } else {
            bytes.append(PickleWriter.longBinput)
            appendUInt32(UInt32(memoCount))
        }
        memoCount += 1
    }

    private mutating func get(_ index: Int) {
        if index < 256 {
            bytes += [PickleWriter.binget, UInt8(index)]
        } else {
            bytes.append(PickleWriter.longBinget)
            appendUInt32(UInt32(index))
        }
    }

    /// Writes an object that is the same Python object wherever it appears:
    /// the first time with `write` and a `BINPUT`, afterwards as a `BINGET`.
    public mutating func shared(_ identity: String, _ write: (inout PickleWriter) -> Void) {
        shared(.other(identity), write)
    }

    private mutating func shared(_ identity: Shared, _ write: (inout PickleWriter) -> Void) {
        if let index = sharedMemo[identity] { return get(index) }
        write(&self)
        sharedMemo[identity] = memoCount
        put()
    }

    /// `GLOBAL 'module\nname\n'`; a class is one object, so memoized by name.
    public mutating func global(_ module: String, _ name: String) {
        shared(.global(module: module, name: name)) { p in
            p.op(PickleWriter.global)
            p.bytes += Array("\(module)\n\(name)\n".utf8)
        }
    }

    /// A new string object (`BINUNICODE`, memoized).
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        op(PickleWriter.binunicode)
        appendUInt32(UInt32(utf8.count))
        bytes += utf8
        put()
    }

    /// A string that is one interned object in the pickled data.
    public mutating func sharedString(_ s: String) {
        shared(.string(s)) { p in
            let utf8 = Array(s.utf8)
            p.op(PickleWriter.binunicode)
            p.appendUInt32(UInt32(utf8.count))
            p.bytes += utf8
        }
    }

    /// An integer, in the encoding CPython's `save_long` picks: `BININT1` or
    /// `BININT2` for small non-negative values, `BININT` for the rest of the
    /// signed 32-bit range, else `LONG1` with the minimal two's-complement
    /// little-endian bytes (`encode_long`).
    public mutating func int(_ v: Int) {
        if v >= 0 && v < 0x100 {
            bytes += [PickleWriter.binint1, UInt8(v)]
        } else if v >= 0 && v < 0x10000 {
            bytes += [PickleWriter.binint2, UInt8(v & 0xFF), UInt8(v >> 8)]
        } else if v >= Int(Int32.min) && v <= Int(Int32.max) {
            op(PickleWriter.binint)
            appendUInt32(UInt32(bitPattern: Int32(v)))
        } else {
            // nbytes = bits of |v| / 8 + 1; a negative value drops a
            // redundant 0xFF top byte, as CPython does.
            let magnitudeBits = Int.bitWidth - v.magnitude.leadingZeroBitCount
            var byteCount = magnitudeBits / 8 + 1
            let all = (0..<9).map { i in i < 8 ? UInt8(truncatingIfNeeded: v >> (8 * i)) : (v < 0 ? 0xFF : 0) }
            if v < 0, byteCount > 1, all[byteCount - 1] == 0xFF, all[byteCount - 2] & 0x80 != 0 { byteCount -= 1 }
            bytes += [PickleWriter.long1, UInt8(byteCount)]
            bytes += all[0..<byteCount]
        }
    }

    /// A tuple of integers (a size or a stride): a new tuple object each time.
    public mutating func intTuple(_ values: [Int]) {
        tuple(count: values.count) { p in for v in values { p.int(v) } }
    }

    /// A new tuple whose `count` items `items` writes.
    public mutating func tuple(count: Int, _ items: (inout PickleWriter) -> Void) {
        switch count {
        case 0:
            op(PickleWriter.emptyTuple)  // the empty tuple is a singleton: never memoized
        case 1...3:
            items(&self)
            op([PickleWriter.tuple1, PickleWriter.tuple2, PickleWriter.tuple3][count - 1])
            put()
        default:
            op(PickleWriter.mark)
            items(&self)
            op(PickleWriter.tuple)
            put()
        }
    }

    /// A dict as CPython's C pickler (`batch_dict_exact`, which torch.save
    /// uses) writes it: `EMPTY_DICT`; a dict of exactly one item as a bare
    /// `SETITEM`; otherwise `MARK ... SETITEMS` batches of up to 1000 items,
    /// going on while the last batch was full (so 1000 items end with an
    /// empty `MARK SETITEMS`), as docs/formats/pt.md states; the pure-Python
    /// pickler's rule (a lone last item as `SETITEM`) is not torch.save's.
    public mutating func dict<Item>(_ items: [Item], _ writeItem: (inout PickleWriter, Item) -> Void) {
        op(PickleWriter.emptyDict)
        put()
        if items.count == 1 {
            writeItem(&self, items[0])
            op(PickleWriter.setitem)
            return
        }
        guard !items.isEmpty else { return }
        var start = 0
        var batchWasFull: Bool
        repeat {
            let batch = items[start..<min(start + 1000, items.count)]
            op(PickleWriter.mark)
            for item in batch { writeItem(&self, item) }
            op(PickleWriter.setitems)
            start += batch.count
            batchWasFull = batch.count == 1000
        } while batchWasFull
    }

    public mutating func finish() -> [UInt8] {
        op(PickleWriter.stop)
        return pieces.isEmpty ? bytes : pieces.joined() + bytes
    }

    /// The pickle, in the pieces it was written in (`init(pieceSize:)`).
    public mutating func finishInPieces() -> [[UInt8]] {
        op(PickleWriter.stop)
        return pieces + [bytes]
    }
}
