/// The pickle machine: stack, marks and memo, one opcode at a time. The
/// opcodes that name or call globals are in PickleCalls.swift.
struct PickleMachine {
    let bytes: [UInt8]
    let file: String
    let limits: PickleReader.Limits
    let allowList: PickleAllowList
    var position = 0
    /// Where the current protocol-4 FRAME ends (0: none seen).
    var frameEnd = 0
    /// Offset of the opcode being run, for messages.
    var opcodeOffset = 0
    var opcode: UInt8 = 0
    var stack: [PickleSlot] = []
    /// Stack heights at each open MARK.
    var marks: [Int] = []
    var memo: [PickleSlot] = []
    var heap = PickleHeap()
    /// Values put in containers so far (`Limits.maximumItems`).
    var items = 0
    /// Dicts BUILD gave a DCP object as its state: frozen (PickleCallsDCP.swift).
    var stateDicts: Set<Int> = []

    init(bytes: [UInt8], file: String, limits: PickleReader.Limits, allowList: PickleAllowList = .torchSave) {
        self.bytes = bytes
        self.file = file
        self.limits = limits
        self.allowList = allowList
    }

    func fail(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }

    /// `BINPUT at byte 12`, for messages about the current opcode.
    var here: String { "\(PickleOpcodes.names[opcode] ?? "?") at byte \(opcodeOffset)" }

    /// Runs the pickle to its STOP and returns the one value left.
    mutating func run() throws(ShardFSError) -> PickleSlot {
        // torch.save's pickles open with PROTO 2, DCP's with PROTO 4 (or 5);
        // nothing else is expected.
        let protocols = allowList.protocols
        let wanted = protocols.count == 1 ? "\(protocols.lowerBound)" : "\(protocols.lowerBound) to \(protocols.upperBound)"
        if bytes.count == 1, bytes[0] == 0x80 { throw fail("truncated: the pickle ends within its PROTO opcode") }
        guard bytes.count >= 2, bytes[0] == 0x80 else {
            throw fail(bytes.isEmpty ? "the pickle is empty" : "the pickle does not start with PROTO \(wanted) (it starts with \(PickleOpcodes.describe(bytes[0])))")
        }
        guard protocols.contains(bytes[1]) else {
            throw fail("pickle protocol \(bytes[1]) (PROTO at byte 0): \(allowList.writer) writes protocol \(wanted)")
        }
        position = 2
        while true {
            guard position < bytes.count else {
                throw fail("truncated: the pickle ends at byte \(bytes.count) without STOP")
            }
            opcodeOffset = position
            opcode = bytes[position]
            position += 1
            if opcode == 0x2E { return try stop() }
            try step()
        }
    }

    private mutating func stop() throws(ShardFSError) -> PickleSlot {
        guard marks.isEmpty else { throw fail("\(here): \(marks.count) MARK(s) still open") }
        guard stack.count == 1 else { throw fail("\(here): the stack holds \(stack.count) values, not 1") }
        guard position == bytes.count else { throw fail("\(bytes.count - position) bytes follow STOP at byte \(opcodeOffset)") }
        return stack[0]
    }

    private mutating func step() throws(ShardFSError) {
        switch opcode {
        case 0x7D: try push(.object(try allocate(.dict(ordered: false))))  // EMPTY_DICT
        case 0x5D: try push(.object(try allocate(.list)))                  // EMPTY_LIST
        case 0x29: try push(.object(PickleHeap.emptyTuple))                // EMPTY_TUPLE
        case 0x28:                                                         // MARK
            guard marks.count < limits.maximumMarks else { throw fail("\(here): more than \(limits.maximumMarks) MARKs open") }
            marks.append(stack.count)
        case 0x74: try push(.object(try allocate(.tuple, popMark())))      // TUPLE
        case 0x85, 0x86, 0x87:                                             // TUPLE1, TUPLE2, TUPLE3
            try push(.object(try allocate(.tuple, pop(Int(opcode) - 0x84))))
        case 0x71: try put(Int(try fixed(1)))                              // BINPUT
        case 0x72: try put(Int(try fixed(4)))                              // LONG_BINPUT
        case 0x68: try get(Int(try fixed(1)))                              // BINGET
        case 0x6A: try get(Int(try fixed(4)))                              // LONG_BINGET
        case 0x58: try push(.string(try string(length: Int(try fixed(4))))) // BINUNICODE
        case 0x55: try push(.string(try string(length: Int(try fixed(1))))) // SHORT_BINSTRING (py2 str)
        case 0x54:                                                         // BINSTRING (py2 str; signed length)
            let length = Int(Int32(truncatingIfNeeded: try fixed(4)))
            guard length >= 0 else { throw fail("\(here): negative length \(length)") }
            try push(.string(try string(length: length)))
        case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try fixed(4)))))  // BININT
        case 0x4B: try push(.int(Int(try fixed(1))))                       // BININT1
        case 0x4D: try push(.int(Int(try fixed(2))))                       // BININT2
        case 0x8A: try push(.int(try long1()))                             // LONG1
        case 0x4E: try push(.none)                                         // NONE
        case 0x88: try push(.bool(true))                                   // NEWTRUE
        case 0x89: try push(.bool(false))                                  // NEWFALSE
        case 0x47:                                                         // BINFLOAT: big-endian
            let bits = try take(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            try push(.float(Double(bitPattern: bits)))
        case 0x63: try push(try global())                                  // GLOBAL
        case 0x52: try reduce()                                            // REDUCE
        case 0x81: try newObject()                                         // NEWOBJ
        case 0x62: try build()                                             // BUILD
        case 0x51:                                                         // BINPERSID
            let storage = try persistentStorage(pop(1)[0])
            try count(1)
            try push(heap.store(storage))
        case 0x73: try setItems(pop(2))                                    // SETITEM
        case 0x75: try setItems(popMark())                                 // SETITEMS
        case 0x61: try append(pop(1))                                      // APPEND
        case 0x65: try append(popMark())                                   // APPENDS
        case 0x80: throw fail("\(here): PROTO again, past the start of the pickle")
        // Protocol 4's, which DCP's pickle.dump writes and torch.save does not.
        case 0x95 where allowList == .dcpMetadata: try frame()              // FRAME
        case 0x8C where allowList == .dcpMetadata:                          // SHORT_BINUNICODE
            try push(.string(try string(length: Int(try fixed(1)))))
        case 0x94 where allowList == .dcpMetadata: try put(memo.count)      // MEMOIZE
        case 0x93 where allowList == .dcpMetadata: try stackGlobal()        // STACK_GLOBAL
        default:
            throw fail("\(PickleOpcodes.describe(opcode)) at byte \(opcodeOffset) is not something \(allowList.writer) writes")
        }
    }

    // MARK: Reading operands

    /// The next `count` bytes.
    mutating func take(_ count: Int) throws(ShardFSError) -> ArraySlice<UInt8> {
        guard count <= bytes.count - position else {
            throw fail("truncated: \(here) needs \(count) bytes of operand, the pickle ends at byte \(bytes.count)")
        }
        defer { position += count }
        return bytes[position..<position + count]
    }

    /// An unsigned little-endian operand of `count` bytes (1, 2 or 4).
    mutating func fixed(_ count: Int) throws(ShardFSError) -> UInt32 {
        try take(count).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    /// FRAME: an 8-byte length, a hint for buffered reading. Checked as
    /// Python's unpickler does: a frame starts where the last one ended and
    /// lies within the pickle.
    private mutating func frame() throws(ShardFSError) {
        let length = try take(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard opcodeOffset >= frameEnd else {
            throw fail("\(here): a new frame before the end of the last one (at byte \(frameEnd))")
        }
        guard length <= UInt64(bytes.count - position) else {
            throw fail("truncated: \(here) announces \(length) bytes, the pickle ends at byte \(bytes.count)")
        }
        frameEnd = position + Int(length)
    }

    mutating func string(length: Int) throws(ShardFSError) -> String {
        guard length <= limits.maximumStringLength else {
            throw fail("\(here): a string of \(length) bytes, more than the \(limits.maximumStringLength) ShardFS reads")
        }
        guard let s = String(validating: try take(length), as: UTF8.self) else { throw fail("\(here): the string is not valid UTF-8") }
        return s
    }

    /// LONG1: a length byte, then that many bytes of little-endian two's complement.
    mutating func long1() throws(ShardFSError) -> Int {
        let count = Int(try fixed(1))
        guard count <= 8 else { throw fail("\(here): an integer of \(count) bytes (ShardFS reads integers up to 8 bytes)") }
        let digits = try take(count)
        guard let last = digits.last else { return 0 }
        var value: UInt64 = last & 0x80 != 0 ? ~0 : 0  // sign extension
        for byte in digits.reversed() { value = value << 8 | UInt64(byte) }
        return Int(Int64(bitPattern: value))
    }

    // MARK: Stack, marks and memo

    mutating func push(_ slot: PickleSlot) throws(ShardFSError) {
        guard stack.count < limits.maximumStack else { throw fail("\(here): more than \(limits.maximumStack) values on the stack") }
        stack.append(slot)
    }

    /// The lowest stack index the current opcode may touch: nothing below an open MARK.
    var fence: Int { marks.last ?? 0 }

    /// Pops `count` values (in stack order) from above the fence.
    mutating func pop(_ count: Int) throws(ShardFSError) -> [PickleSlot] {
        guard stack.count - fence >= count else {
            throw fail("stack underflow: \(here) needs \(count) value(s), the stack holds \(stack.count - fence)\(marks.isEmpty ? "" : " above its MARK")")
        }
        let values = Array(stack[(stack.count - count)...])
        stack.removeLast(count)
        return values
    }

    /// Pops the values above the last MARK, and the MARK.
    mutating func popMark() throws(ShardFSError) -> [PickleSlot] {
        guard let mark = marks.popLast() else { throw fail("\(here) with no MARK open") }
        let values = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return values
    }

    /// The top of the stack (left there), which must lie above the fence.
    func top() throws(ShardFSError) -> PickleSlot {
        guard stack.count > fence, let last = stack.last else { throw fail("stack underflow: \(here) needs a value below its operands") }
        return last
    }

    /// Memo indices are 0, 1, 2, ... in order: Python's pickler numbers its
    /// memo by its length, so anything else is not from torch.save.
    mutating func put(_ index: Int) throws(ShardFSError) {
        guard index == memo.count else { throw fail("\(here): memo index \(index) out of order (the next is \(memo.count))") }
        guard memo.count < limits.maximumMemo else { throw fail("\(here): more than \(limits.maximumMemo) memo entries") }
        memo.append(try top())
    }

    mutating func get(_ index: Int) throws(ShardFSError) {
        guard index < memo.count else { throw fail("\(here): memo index \(index) was never put (the memo holds \(memo.count))") }
        try push(memo[index])
    }

    // MARK: Containers

    /// A new container holding `elements`, counted against `maximumItems`.
    mutating func allocate(_ kind: PickleHeap.Kind, _ elements: [PickleSlot] = []) throws(ShardFSError) -> Int {
        try count(1 + elements.count)
        return heap.allocate(kind, elements)
    }

    mutating func count(_ n: Int) throws(ShardFSError) {
        items += n
        guard items <= limits.maximumItems else { throw fail("\(here): more than \(limits.maximumItems) values in containers") }
    }

    /// SETITEM / SETITEMS: key-value pairs into the dict below them.
    private mutating func setItems(_ pairs: [PickleSlot]) throws(ShardFSError) {
        guard pairs.count % 2 == 0 else { throw fail("\(here): \(pairs.count) values, not key-value pairs") }
        guard case .object(let index) = try top(), case .dict = heap.kinds[index] else {
            throw fail("\(here): sets items of \((try? heap.kindName(top())) ?? "nothing"), not a dict")
        }
        guard !stateDicts.contains(index) else { throw fail("\(here): sets items of a dict already given to BUILD as an object's state") }
        var i = 0
        while i < pairs.count {
            switch pairs[i] {
            case .none, .bool, .int, .float, .string: break
            case .object(let key) where heap.tuple(.object(key)) != nil: break
            case .object(let key) where heap.isMetadataIndex(key): break  // storage_data's keys
            default: throw fail("\(here): \(heap.kindName(pairs[i])) cannot be a dict key")
            }
            i += 2
        }
        try count(pairs.count)
        heap.contents[index].append(contentsOf: pairs)
    }

    /// APPEND / APPENDS: values onto the list below them.
    private mutating func append(_ values: [PickleSlot]) throws(ShardFSError) {
        guard case .object(let index) = try top(), case .list = heap.kinds[index] else {
            throw fail("\(here): appends to \((try? heap.kindName(top())) ?? "nothing"), not a list")
        }
        try count(values.count)
        heap.contents[index].append(contentsOf: values)
    }
}
