import Testing
@testable import ShardFS

/// PickleReader on the data.pkl of real torch.save files, on pickles written
/// opcode by opcode here (expected values worked out from the pickle
/// semantics by hand), and on hostile pickles, each refused naming the
/// opcode, global or limit at fault.
@Suite struct PickleReaderTests {
    // MARK: Pickle bytes, by hand

    static let proto2: [UInt8] = [0x80, 0x02]
    static let stop: [UInt8] = [0x2E]
    static func unicode(_ s: String) -> [UInt8] { [0x58] + le32(s.utf8.count) + Array(s.utf8) }
    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
    static func int1(_ v: Int) -> [UInt8] { [0x4B, UInt8(v)] }
    static func put(_ i: Int) -> [UInt8] { [0x71, UInt8(i)] }
    static func get(_ i: Int) -> [UInt8] { [0x68, UInt8(i)] }
    static let mark: UInt8 = 0x28, tuple: UInt8 = 0x74, tuple1: UInt8 = 0x85, tuple2: UInt8 = 0x86, tuple3: UInt8 = 0x87
    static let emptyTuple: UInt8 = 0x29, emptyDict: UInt8 = 0x7D, emptyList: UInt8 = 0x5D, reduce: UInt8 = 0x52
    static let newFalse: UInt8 = 0x89, binpersid: UInt8 = 0x51, setitem: UInt8 = 0x73, append: UInt8 = 0x61

    func parse(_ bytes: [UInt8], limits: PickleReader.Limits = PickleReader.Limits()) throws(ShardFSError) -> PickleValue {
        try PickleReader.parse(bytes, file: "test.pkl", limits: limits)
    }

    func pickle(of literal: String, archive: String) throws -> [UInt8] {
        try #require(try TestZip.contents(decodeBase64(literal))["\(archive)/data.pkl"])
    }

    static func storage(_ dtype: DType, _ key: String, _ numel: Int) -> PickledStorage {
        PickledStorage(dtype: dtype, key: key, location: "cpu", numel: numel)
    }

    static func tensor(_ s: PickledStorage, offset: Int = 0, _ shape: [Int], _ strides: [Int]) -> PickleValue {
        .tensor(PickledTensor(storage: s, storageOffset: offset, shape: shape, strides: strides))
    }

    static func item(_ key: String, _ value: PickleValue) -> PickleValue.Item { .init(key: .string(key), value: value) }

    // MARK: Real torch.save pickles

    /// views.pt: a = arange(10), b = a[2:], t = a[:6].view(2, 3).t(): one storage.
    @Test func views() throws {
        let s = Self.storage(.float32, "0", 10)
        let value = try parse(try pickle(of: TorchLoadFixtureData.views, archive: "views"))
        #expect(value == .dict([Self.item("a", Self.tensor(s, [10], [1])),
                                Self.item("b", Self.tensor(s, offset: 2, [8], [1])),
                                Self.item("t", Self.tensor(s, [3, 2], [1, 3]))], ordered: false))
    }

    /// A module's state_dict: an OrderedDict whose `_metadata` (set by BUILD) is dropped.
    @Test func moduleStateDict() throws {
        let value = try parse(try pickle(of: TorchLoadFixtureData.module, archive: "dp_rank_00_tp_rank_00_pp_rank_00"))
        #expect(value == .dict([Self.item("embed.weight", Self.tensor(Self.storage(.float32, "0", 12), [4, 3], [3, 1])),
                                Self.item("block.scale", Self.tensor(Self.storage(.float64, "1", 2), [2], [1])),
                                Self.item("block.lin.weight", Self.tensor(Self.storage(.float32, "2", 6), [2, 3], [3, 1])),
                                Self.item("block.lin.bias", Self.tensor(Self.storage(.float32, "3", 2), [2], [1]))], ordered: true))
    }

    /// Parameters (with and without requires_grad, with a Python attribute),
    /// and a tied one: the same object again, fetched from the memo.
    @Test func parameters() throws {
        let p = Self.tensor(Self.storage(.float32, "0", 4), [4], [1])
        let value = try parse(try pickle(of: TorchLoadFixtureData.parameters, archive: "parameters"))
        #expect(value == .dict([Self.item("p", p),
                                Self.item("frozen", Self.tensor(Self.storage(.bfloat16, "1", 3), [3], [1])),
                                Self.item("stateful", Self.tensor(Self.storage(.float16, "2", 2), [2], [1])),
                                Self.item("tied", p)], ordered: false))
    }

    @Test func xserReferencesAndInfo() throws {
        let references = try parse(try pickle(of: TorchSaveFixtureData.xserOneReference, archive: "one"))
        #expect(references == .dict([Self.item("lm_head.weight", .tensorReference(tid: 0))], ordered: false))
        let info = try parse(try pickle(of: TorchSaveFixtureData.xserOneInfo, archive: "one.pt.info"))
        #expect(info == .dict([.init(key: .int(0), value: .dict([Self.item("dtype", .dtype(.bfloat16)),
                                                                  Self.item("shape", .size([8, 8])),
                                                                  Self.item("expert_model_parallel", .bool(false))], ordered: false))],
                              ordered: false))
    }

    /// 1001 items: LONG_BINPUT / LONG_BINGET past memo index 255.
    @Test func longMemoIndices() throws {
        let value = try parse(try pickle(of: TorchSaveFixtureData.many, archive: "many"))
        guard case .dict(let items, _) = value else { Issue.record("not a dict"); return }
        #expect(items.count == 1001)
        #expect(items.last == Self.item("t1000", Self.tensor(Self.storage(.float64, "1000", 1), [1], [1])))
    }

    // MARK: Opcodes, by hand

    @Test func scalars() throws {
        // (None, True, False, -1 (BININT), 258 (BININT2), 1.5 (BINFLOAT), 2^40 and -2 (LONG1), 'é' (SHORT_BINSTRING), 'ab' (BINSTRING))
        var b = Self.proto2 + [Self.mark, 0x4E, 0x88, 0x89] + [0x4A] + le32(-1) + [0x4D, 0x02, 0x01]
        b += [0x47, 0x3F, 0xF8, 0, 0, 0, 0, 0, 0]
        b += [0x8A, 6, 0, 0, 0, 0, 0, 1] + [0x8A, 1, 0xFE] + [0x8A, 0]
        b += [0x55, 2, 0xC3, 0xA9] + [0x54] + le32(2) + bytes("ab") + [Self.tuple] + Self.stop
        #expect(try parse(b) == .tuple([.none, .bool(true), .bool(false), .int(-1), .int(258), .float(1.5),
                                        .int(1 << 40), .int(-2), .int(0), .string("é"), .string("ab")]))
    }

    /// A list memoized, then appended to: every reference to it sees the
    /// append, as in Python (memo by reference, not by copy).
    @Test func memoIsByReference() throws {
        var b = Self.proto2 + [Self.emptyList] + Self.put(0) + Self.int1(1) + [Self.append]  // a = [1]
        b += Self.get(0) + [Self.tuple2]                                                    // (a, a)
        b += Self.get(0) + Self.int1(2) + [Self.append]                                     // a.append(2)
        b += [Self.tuple2] + Self.stop                                                      // ((a, a), a)
        let a = PickleValue.list([.int(1), .int(2)])
        #expect(try parse(b) == .tuple([.tuple([a, a]), a]))
    }

    @Test func appendsAndSetitems() throws {
        var b = Self.proto2 + [Self.emptyDict, Self.mark] + Self.unicode("k") + [Self.emptyList, Self.mark]
        b += Self.int1(1) + Self.int1(2) + [0x65] + Self.int1(7) + Self.int1(8) + [Self.tuple2] + Self.int1(9) + [0x75] + Self.stop
        #expect(try parse(b) == .dict([Self.item("k", .list([.int(1), .int(2)])),
                                       .init(key: .tuple([.int(7), .int(8)]), value: .int(9))], ordered: false))
    }

    /// torch.Size((2, 3)) and a dtype.
    @Test func sizeAndDType() throws {
        let b = Self.proto2 + Self.global("torch", "Size") + Self.int1(2) + Self.int1(3) + [Self.tuple2, Self.tuple1, Self.reduce]
            + Self.global("torch", "float16") + [Self.tuple2] + Self.stop
        #expect(try parse(b) == .tuple([.size([2, 3]), .dtype(.float16)]))
    }

    /// _rebuild_tensor_v2 by hand, with the optional 7th argument (metadata).
    /// Not memoized (no BINPUT), so it can be written any number of times in one pickle.
    static func rebuildTensor(offset: [UInt8] = int1(0), hooks: [UInt8] = global("collections", "OrderedDict") + [emptyTuple, reduce],
                              metadata: [UInt8] = [], storageClass: [UInt8] = global("torch", "HalfStorage"),
                              key: String = "0", numel: Int = 4,
                              size: [UInt8] = int1(2) + [tuple1], stride: [UInt8] = int1(1) + [tuple1]) -> [UInt8] {
        var b = global("torch._utils", "_rebuild_tensor_v2") + [mark, mark] + unicode("storage") + storageClass
        b += unicode(key) + unicode("cpu") + int1(numel) + [tuple, binpersid] + offset + size + stride + [newFalse] + hooks + metadata
        return b + [tuple, reduce]
    }

    @Test func tensorWithMetadata() throws {
        let b = Self.proto2 + Self.rebuildTensor(offset: Self.int1(1), metadata: [Self.emptyDict]) + Self.stop
        #expect(try parse(b) == Self.tensor(Self.storage(.float16, "0", 4), offset: 1, [2], [1]))
    }

    // MARK: Refusals

    func expectRefused(_ b: [UInt8], limits: PickleReader.Limits = PickleReader.Limits(), mentioning words: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) {
        expectRefusal(mentioning: words, sourceLocation: sourceLocation) { () throws(ShardFSError) in try parse(b, limits: limits) }
    }

    /// ParsedPickles (a tag's repeated data.pkls unpickled once): during an
    /// opening the same bytes give the same value again (from its table),
    /// other bytes their own; a refusal is raised again for each file that
    /// holds it, naming that file (nothing refused is kept); outside an
    /// opening, and after it ends, it still parses.
    @Test func parsedPicklesGiveEachItsOwnValue() throws {
        let x = Self.proto2 + Self.unicode("x") + Self.stop
        let seven = Self.proto2 + Self.int1(7) + Self.stop
        #expect(try ParsedPickles.parse(seven, file: "b/data.pkl") == .int(7))
        ParsedPickles.begin()
        for _ in 0..<2 {
            #expect(try ParsedPickles.parse(x, file: "a/data.pkl") == .string("x"))
            #expect(try ParsedPickles.parse(seven, file: "b/data.pkl") == .int(7))
        }
        let hostile = Self.proto2 + Self.global("os", "system") + Self.stop
        for file in ["c/data.pkl", "d/data.pkl"] {
            expectRefusal(mentioning: [file, "global os.system"]) { () throws(ShardFSError) in try ParsedPickles.parse(hostile, file: file) }
        }
        ParsedPickles.end()
        #expect(try ParsedPickles.parse(seven, file: "b/data.pkl") == .int(7))
    }

    @Test func disallowedOpcodes() {
        // INST 'os\nsystem\n': protocol 0's way to call a class.
        expectRefused(Self.proto2 + [0x69] + bytes("os\nsystem\n") + Self.stop,
                      mentioning: ["opcode INST (0x69) at byte 2 is not something torch.save writes"])
        expectRefused(Self.proto2 + [0x95] + le64(1) + [0x4E] + Self.stop, mentioning: ["opcode FRAME (0x95) at byte 2"])
        expectRefused(Self.proto2 + Self.unicode("a") + [0x93] + Self.stop, mentioning: ["opcode STACK_GLOBAL (0x93) at byte 8"])
        expectRefused(Self.proto2 + [0x01] + Self.stop, mentioning: ["byte 0x01 (not a pickle opcode) at byte 2"])
        expectRefused([0x80, 0x04, 0x95] + le64(2) + [0x4E, 0x2E], mentioning: ["pickle protocol 4", "torch.save writes protocol 2"])
        expectRefused([0x4E, 0x2E], mentioning: ["does not start with PROTO 2", "opcode NONE (0x4E)"])
    }

    @Test func disallowedGlobals() {
        expectRefused(Self.proto2 + Self.global("os", "system") + Self.stop, mentioning: ["global os.system", "byte 2", "allow-list"])
        expectRefused(Self.proto2 + Self.global("builtins", "eval") + Self.stop, mentioning: ["global builtins.eval"])
        expectRefused(Self.proto2 + Self.global("torch", "LongStorage") + Self.stop,
                      mentioning: ["global torch.LongStorage", "floating-point storages only"])
        expectRefused(Self.proto2 + Self.global("torch", "int64") + Self.stop, mentioning: ["global torch.int64", "floating-point dtypes only"])
        expectRefused(Self.proto2 + [0x63] + bytes("os") + Self.stop, mentioning: ["GLOBAL at byte 2", "no newline"])
    }

    /// Allowed globals called in ways torch.save never does.
    @Test func disallowedCalls() {
        expectRefused(Self.proto2 + Self.global("torch", "FloatStorage") + [Self.emptyTuple, Self.reduce] + Self.stop,
                      mentioning: ["REDUCE at byte", "calls torch.FloatStorage"])
        expectRefused(Self.proto2 + Self.global("collections", "OrderedDict") + Self.int1(1) + [Self.tuple1, Self.reduce] + Self.stop,
                      mentioning: ["collections.OrderedDict called with 1 arguments"])
        expectRefused(Self.proto2 + Self.global("collections", "OrderedDict") + [Self.emptyTuple, 0x81] + Self.stop,
                      mentioning: ["NEWOBJ at byte", "collections.OrderedDict"])
        expectRefused(Self.proto2 + [Self.emptyList, Self.emptyDict, 0x62] + Self.stop, mentioning: ["BUILD at byte 4 on a list"])
        expectRefused(Self.proto2 + Self.int1(1) + [Self.emptyTuple, Self.reduce] + Self.stop, mentioning: ["calls an int"])
        expectRefused(Self.proto2 + Self.unicode("0") + [Self.binpersid] + Self.stop, mentioning: ["BINPERSID", "persistent id is a string"])
        // Backward hooks: an OrderedDict with an item.
        let hooks = Self.global("collections", "OrderedDict") + [Self.emptyTuple, Self.reduce] + Self.int1(1) + Self.int1(2) + [Self.setitem]
        expectRefused(Self.proto2 + Self.rebuildTensor(hooks: hooks) + Self.stop, mentioning: ["with backward hooks"])
        expectRefused(Self.proto2 + Self.rebuildTensor(offset: [0x4A] + le32(-1)) + Self.stop, mentioning: ["storage offset -1 is negative"])
        expectRefused(Self.proto2 + Self.rebuildTensor(stride: [0x4A] + le32(-1) + [Self.tuple1]) + Self.stop,
                      mentioning: ["the stride holds -1"])
        expectRefused(Self.proto2 + Self.rebuildTensor(stride: [Self.emptyTuple]) + Self.stop, mentioning: ["size [2] and stride [] differ"])
        expectRefused(Self.proto2 + Self.rebuildTensor(storageClass: Self.global("torch", "Size")) + Self.stop,
                      mentioning: ["storage class is the global torch.Size"])
    }

    @Test func deepMarks() {
        expectRefused(Self.proto2 + [UInt8](repeating: Self.mark, count: 100) + Self.stop, mentioning: ["more than 64 MARKs open"])
    }

    @Test func memoBomb() {
        var limits = PickleReader.Limits()
        limits.maximumMemo = 100
        var b = Self.proto2 + [0x4E]
        for i in 0..<101 { b += [0x72] + le32(i) }  // LONG_BINPUT 0, 1, ..., 100
        expectRefused(b + Self.stop, limits: limits, mentioning: ["LONG_BINPUT", "more than 100 memo entries"])
        expectRefused(Self.proto2 + [0x4E] + Self.put(3) + Self.stop, mentioning: ["BINPUT at byte 3", "memo index 3 out of order"])
    }

    @Test func hugeString() {
        expectRefused(Self.proto2 + [0x58] + le32(0xFFFF_FFFF) + Self.stop, mentioning: ["BINUNICODE at byte 2", "4294967295 bytes"])
        expectRefused(Self.proto2 + [0x58] + le32(1000) + bytes("abc"), mentioning: ["truncated", "BINUNICODE at byte 2"])
        expectRefused(Self.proto2 + [0x58] + le32(1) + [0xFF] + Self.stop, mentioning: ["BINUNICODE at byte 2", "not valid UTF-8"])
    }

    @Test func missingMemoIndex() {
        expectRefused(Self.proto2 + [0x4E] + Self.put(0) + Self.get(5) + Self.stop,
                      mentioning: ["BINGET at byte 5", "memo index 5 was never put"])
        expectRefused(Self.proto2 + [0x6A] + le32(70000) + Self.stop, mentioning: ["LONG_BINGET at byte 2", "memo index 70000"])
    }

    @Test func stackUnderflow() {
        expectRefused(Self.proto2 + [Self.reduce] + Self.stop, mentioning: ["stack underflow", "REDUCE at byte 2"])
        // TUPLE1 may not reach below an open MARK.
        expectRefused(Self.proto2 + Self.int1(1) + [Self.mark, Self.tuple1] + Self.stop, mentioning: ["stack underflow", "TUPLE1 at byte 5", "above its MARK"])
        expectRefused(Self.proto2 + [Self.tuple] + Self.stop, mentioning: ["TUPLE at byte 2 with no MARK open"])
        expectRefused(Self.proto2 + Self.stop, mentioning: ["STOP at byte 2", "holds 0 values"])
    }

    @Test func stopMissingOrMisplaced() {
        expectRefused(Self.proto2 + [0x4E], mentioning: ["truncated", "without STOP"])
        expectRefused(Self.proto2 + [0x4E, 0x4E] + Self.stop, mentioning: ["STOP at byte 4", "holds 2 values"])
        expectRefused(Self.proto2 + [0x4E] + Self.stop + [0x4E], mentioning: ["1 bytes follow STOP at byte 3"])
        expectRefused(Self.proto2 + [Self.mark, 0x4E] + Self.stop, mentioning: ["STOP at byte 4", "MARK(s) still open"])
        expectRefused([], mentioning: ["empty"])
    }

    @Test func longIntegers() {
        expectRefused(Self.proto2 + [0x8A, 9] + [UInt8](repeating: 1, count: 9) + Self.stop, mentioning: ["LONG1 at byte 2", "9 bytes"])
    }

    /// A list nested 100 deep, and a list holding itself.
    @Test func nesting() {
        let b = Self.proto2 + [UInt8](repeating: Self.emptyList, count: 100) + [UInt8](repeating: Self.append, count: 99) + Self.stop
        expectRefused(b, mentioning: ["deeper than 64"])
        expectRefused(Self.proto2 + [Self.emptyList] + Self.put(0) + Self.get(0) + [Self.append] + Self.stop, mentioning: ["inside itself"])
    }

    /// t0 = (1,), t(k+1) = (tk, tk): 41 memo entries stand for a tree of
    /// 2^41 nodes, refused when the tree is counted, not built.
    @Test func exponentialSharing() {
        var b = Self.proto2 + Self.int1(1) + [Self.tuple1] + Self.put(0)
        for k in 1...40 { b += Self.get(k - 1) + [Self.tuple2] + Self.put(k) }  // (t, t): t is still on the stack
        expectRefused(b + Self.stop, mentioning: ["more than \(PickleReader.Limits().maximumItems) nodes"])
    }

    /// The stack, the memo and every container are arrays of slots: a slot
    /// grown past 24 bytes would multiply the memory a pickle can claim.
    @Test func slotSize() {
        #expect(MemoryLayout<PickleSlot>.stride <= 24)
    }

    @Test func itemAndLengthLimits() {
        var limits = PickleReader.Limits()
        limits.maximumItems = 10
        var b = Self.proto2 + [Self.emptyList, Self.mark]
        for _ in 0..<20 { b += [0x4E] }
        expectRefused(b + [0x65] + Self.stop, limits: limits, mentioning: ["APPENDS at byte", "more than 10 values in containers"])
        limits = PickleReader.Limits()
        limits.maximumLength = 3
        expectRefused(Self.proto2 + [0x4E] + Self.stop, limits: limits, mentioning: ["4 bytes", "more than the 3"])
        limits = PickleReader.Limits()
        limits.maximumStack = 5
        expectRefused(Self.proto2 + [UInt8](repeating: 0x4E, count: 6) + Self.stop, limits: limits, mentioning: ["more than 5 values on the stack"])
    }

    @Test func dictKeysAndTensorReferences() throws {
        expectRefused(Self.proto2 + [Self.emptyDict, Self.emptyList, 0x4E, Self.setitem] + Self.stop, mentioning: ["a list cannot be a dict key"])
        expectRefused(Self.proto2 + [Self.emptyList, 0x4E, 0x4E, Self.setitem] + Self.stop, mentioning: ["SETITEM at byte 5", "not a dict"])
        let reference = Self.global("torch_xla.utils.serialization", "TensorReference") + [Self.emptyTuple, 0x81]
        let state = [Self.emptyDict] + Self.unicode("tid") + Self.int1(3) + [Self.setitem]
        expectRefused(Self.proto2 + reference + state + [0x62] + state + [0x62] + Self.stop, mentioning: ["TensorReference built twice"])
        let badState = [Self.emptyDict] + Self.unicode("id") + Self.int1(3) + [Self.setitem]
        expectRefused(Self.proto2 + reference + badState + [0x62] + Self.stop, mentioning: ["exactly {'tid': n}"])
        #expect(try parse(Self.proto2 + reference + state + [0x62] + Self.stop) == .tensorReference(tid: 3))
    }
}
