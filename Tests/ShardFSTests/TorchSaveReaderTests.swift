import Testing
@testable import ShardFS

/// TorchSaveReader on real torch.save files (TorchLoadFixtureData and the
/// xser fixtures of TorchSaveFixtureData). Each expectation restates by hand
/// what the generator saved: keys, dtypes, shapes, strides, which storage
/// record and where in it, and every element's value (arange plus a base),
/// decoded at the located offset through the strides.
@Suite struct TorchSaveReaderTests {
    typealias P = PickleReaderTests

    func stateDict(_ b: [UInt8], file: String = "test.pt") throws(ShardFSError) -> [LocatedTensor] {
        try TorchSaveReader.stateDict(file: file, fileSize: b.count, read: memoryReader(b, file: file))
    }

    /// Expects `t` to be the tensor described, each element at index i equal to value(i).
    func check(_ t: LocatedTensor, in b: [UInt8], key: String, _ dtype: DType, _ shape: [Int], _ strides: [Int],
               record: String, storageOffset: Int, recordSize: Int, value: ([Int]) -> Double,
               sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(t.key == key, sourceLocation: sourceLocation)
        #expect(t.dtype == dtype && t.shape == shape && t.strides == strides, "\(key): \(t.dtype) \(t.shape) \(t.strides)",
                sourceLocation: sourceLocation)
        #expect(t.storage.name == record && t.storage.size == recordSize, "\(key): \(t.storage)", sourceLocation: sourceLocation)
        #expect(t.offset == t.storage.dataOffset + storageOffset * dtype.size, "\(key): offset", sourceLocation: sourceLocation)
        guard t.shape == shape, t.strides == strides else { return }
        var indices: [[Int]] = [[]]
        for d in shape { indices = indices.flatMap { prefix in (0..<d).map { prefix + [$0] } } }
        for index in indices where element(b, t, index) != value(index) {
            Issue.record("\(key)\(index) = \(element(b, t, index)), expected \(value(index))", sourceLocation: sourceLocation)
        }
    }

    // MARK: Plain rank files

    /// nn.Module.state_dict(): an OrderedDict with _metadata.
    @Test func moduleStateDict() throws {
        let b = decodeBase64(TorchLoadFixtureData.module)
        let a = "dp_rank_00_tp_rank_00_pp_rank_00"
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["embed.weight", "block.scale", "block.lin.weight", "block.lin.bias"])
        guard t.count == 4 else { return }
        check(t[0], in: b, key: "embed.weight", .float32, [4, 3], [3, 1], record: "\(a)/data/0", storageOffset: 0, recordSize: 48) {
            Double(3 * $0[0] + $0[1])
        }
        check(t[1], in: b, key: "block.scale", .float64, [2], [1], record: "\(a)/data/1", storageOffset: 0, recordSize: 16) { Double(300 + $0[0]) }
        check(t[2], in: b, key: "block.lin.weight", .float32, [2, 3], [3, 1], record: "\(a)/data/2", storageOffset: 0, recordSize: 24) {
            Double(100 + 3 * $0[0] + $0[1])
        }
        check(t[3], in: b, key: "block.lin.bias", .float32, [2], [1], record: "\(a)/data/3", storageOffset: 0, recordSize: 8) { Double(200 + $0[0]) }
    }

    /// Parameters, one frozen, one with a Python attribute, one tied (the same object as "p").
    @Test func parameters() throws {
        let b = decodeBase64(TorchLoadFixtureData.parameters)
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["p", "frozen", "stateful", "tied"])
        guard t.count == 4 else { return }
        check(t[0], in: b, key: "p", .float32, [4], [1], record: "parameters/data/0", storageOffset: 0, recordSize: 16) { Double($0[0]) }
        check(t[1], in: b, key: "frozen", .bfloat16, [3], [1], record: "parameters/data/1", storageOffset: 0, recordSize: 6) { Double(10 + $0[0]) }
        check(t[2], in: b, key: "stateful", .float16, [2], [1], record: "parameters/data/2", storageOffset: 0, recordSize: 4) { Double(20 + $0[0]) }
        check(t[3], in: b, key: "tied", .float32, [4], [1], record: "parameters/data/0", storageOffset: 0, recordSize: 16) { Double($0[0]) }
        #expect(t[3].storage == t[0].storage && t[3].offset == t[0].offset)
    }

    /// Three views of one storage: whole, from element 2, transposed.
    @Test func viewsShareAStorage() throws {
        let b = decodeBase64(TorchLoadFixtureData.views)
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["a", "b", "t"])
        guard t.count == 3 else { return }
        check(t[0], in: b, key: "a", .float32, [10], [1], record: "views/data/0", storageOffset: 0, recordSize: 40) { Double($0[0]) }
        check(t[1], in: b, key: "b", .float32, [8], [1], record: "views/data/0", storageOffset: 2, recordSize: 40) { Double(2 + $0[0]) }
        // t = a[:6].view(2, 3).t(): t[i][j] = a[3j + i]
        check(t[2], in: b, key: "t", .float32, [3, 2], [1, 3], record: "views/data/0", storageOffset: 0, recordSize: 40) {
            Double($0[0] + 3 * $0[1])
        }
    }

    /// The same views after Python's zipfile rewrote the archive (no zip64, no padding, a comment).
    @Test func viewsRezipped() throws {
        let b = decodeBase64(TorchLoadFixtureData.viewsRezipped)
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["a", "b", "t"])
        guard t.count == 3 else { return }
        check(t[1], in: b, key: "b", .float32, [8], [1], record: "views/data/0", storageOffset: 2, recordSize: 40) { Double(2 + $0[0]) }
        check(t[2], in: b, key: "t", .float32, [3, 2], [1, 3], record: "views/data/0", storageOffset: 0, recordSize: 40) {
            Double($0[0] + 3 * $0[1])
        }
    }

    /// w.t().contiguous().t(): w[i][j] = 4i + j stored column-major.
    @Test func columnMajor() throws {
        let b = decodeBase64(TorchLoadFixtureData.columnMajor)
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["w"])
        guard let w = t.first else { return }
        check(w, in: b, key: "w", .bfloat16, [3, 4], [1, 3], record: "colmajor/data/0", storageOffset: 0, recordSize: 24) {
            Double(4 * $0[0] + $0[1])
        }
        // Storage element 5 (index 2 + 3 * 1) is w[2][1] = 9.
        #expect(element(b, at: w.storage.dataOffset + 5 * 2, .bfloat16) == 9)
    }

    @Test func everyDType() throws {
        let b = decodeBase64(TorchLoadFixtureData.dtypes)
        let t = try stateDict(b)
        #expect(t.map(\.key) == ["bf16", "fp16", "fp32", "fp64", "scalar", "empty"])
        guard t.count == 6 else { return }
        check(t[0], in: b, key: "bf16", .bfloat16, [5], [1], record: "dtypes/data/0", storageOffset: 0, recordSize: 10) { Double($0[0]) }
        check(t[1], in: b, key: "fp16", .float16, [5], [1], record: "dtypes/data/1", storageOffset: 0, recordSize: 10) { Double(1000 + $0[0]) }
        check(t[2], in: b, key: "fp32", .float32, [5], [1], record: "dtypes/data/2", storageOffset: 0, recordSize: 20) { Double(2000 + $0[0]) }
        check(t[3], in: b, key: "fp64", .float64, [5], [1], record: "dtypes/data/3", storageOffset: 0, recordSize: 40) { Double(3000 + $0[0]) }
        check(t[4], in: b, key: "scalar", .float32, [], [], record: "dtypes/data/4", storageOffset: 0, recordSize: 4) { _ in 7 }
        check(t[5], in: b, key: "empty", .float32, [0, 3], [3, 1], record: "dtypes/data/5", storageOffset: 0, recordSize: 0) { _ in 0 }
    }

    /// The existing fixtures: two dtypes; 1001 items (memo past 256); 3-d and a 70000-element dim.
    @Test func olderFixtures() throws {
        let mixed = decodeBase64(TorchSaveFixtureData.mixed)
        let m = try stateDict(mixed)
        #expect(m.map(\.key) == ["a.w", "b"])
        if m.count == 2 {
            check(m[0], in: mixed, key: "a.w", .bfloat16, [2, 3], [3, 1], record: "mixed/data/0", storageOffset: 0, recordSize: 12) {
                Double(3 * $0[0] + $0[1])
            }
            check(m[1], in: mixed, key: "b", .float32, [3], [1], record: "mixed/data/1", storageOffset: 0, recordSize: 12) { _ in 1 }
        }
        let many = decodeBase64(TorchSaveFixtureData.many)
        let t = try stateDict(many)
        #expect(t.map(\.key) == (0...1000).map { "t\($0)" })
        for (i, tensor) in t.enumerated() {
            check(tensor, in: many, key: "t\(i)", .float64, [1], [1], record: "many/data/\(i)", storageOffset: 0, recordSize: 8) { _ in Double(i) }
        }
        let shapes = decodeBase64(TorchSaveFixtureData.shapes)
        let s = try stateDict(shapes)
        #expect(s.map(\.shape) == [[2, 3, 4], [70000]] && s.map(\.strides) == [[12, 4, 1], [1]])
        if s.count == 2 {
            check(s[0], in: shapes, key: "x", .float32, [2, 3, 4], [12, 4, 1], record: "shapes/data/0", storageOffset: 0, recordSize: 96) {
                Double(12 * $0[0] + 4 * $0[1] + $0[2])
            }
            // bf16 holds integers exactly up to 256.
            #expect((0..<257).allSatisfy { element(shapes, at: s[1].offset + 2 * $0, .bfloat16) == Double($0) })
        }
    }

    /// What ShardFS's own writer produces reads back as written.
    @Test func shardFSWrittenFile() throws {
        let pickle = PickleWriter.stateDict([("q", TensorDescription(dtype: .bfloat16, shape: [2, 2])),
                                             ("n", TensorDescription(dtype: .float64, shape: [3]))])
        let bf16: [UInt8] = [0x80, 0x3F, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40]  // 1, 2, 3, 4
        let f64 = [5.0, 6.0, 7.0].flatMap { le64(Int(bitPattern: UInt($0.bitPattern))) }
        let b = try torchSaveFile("rank.pt", pickle: pickle, storages: [bf16, f64])
        let t = try stateDict(b)
        #expect(t.count == 2)
        guard t.count == 2 else { return }
        check(t[0], in: b, key: "q", .bfloat16, [2, 2], [2, 1], record: "rank/data/0", storageOffset: 0, recordSize: 8) { Double(1 + 2 * $0[0] + $0[1]) }
        check(t[1], in: b, key: "n", .float64, [3], [1], record: "rank/data/1", storageOffset: 0, recordSize: 24) { Double(5 + $0[0]) }
    }

    // MARK: xser

    @Test func xserReferences() throws {
        let b = decodeBase64(TorchSaveFixtureData.xserReferences)
        let r = try TorchSaveReader.tensorReferences(file: "p.pt", fileSize: b.count, read: memoryReader(b))
        #expect(r.map(\.key) == ["model.embed_tokens.weight", "model.layers.0.self_attn.qkv_proj.weight_qkv", "model.norm.weight"])
        #expect(r.map(\.tid) == [0, 1, 2])
        let many = decodeBase64(TorchSaveFixtureData.xserManyReferences)
        let m = try TorchSaveReader.tensorReferences(file: "p.pt", fileSize: many.count, read: memoryReader(many))
        #expect(m.map(\.key) == (0...1000).map { "k\($0)" } && m.map(\.tid) == Array(0...1000))
    }

    @Test func xserInfo() throws {
        let b = decodeBase64(TorchSaveFixtureData.xserInfo)
        let info = try TorchSaveReader.tensorInfo(file: "p.pt.info.pt", fileSize: b.count, read: memoryReader(b))
        let expected: [Int: (DType, [Int])] = [0: (.bfloat16, [2, 3]), 1: (.float32, [128256]), 2: (.float16, [4, 300, 5]),
                                               3: (.bfloat16, []), 4: (.float64, [1, 2, 3, 4]), 5: (.float32, [7])]
        #expect(info.keys.sorted() == expected.keys.sorted())
        for (tid, (dtype, shape)) in expected {
            #expect(info[tid]?.dtype == dtype && info[tid]?.shape == shape, "tid \(tid)")
        }
    }

    @Test func xserTensorFiles() throws {
        let b = decodeBase64(TorchSaveFixtureData.xserTensor)
        let t = try TorchSaveReader.singleTensor(file: "tensor_0.pt", fileSize: b.count, read: memoryReader(b))
        check(t, in: b, key: "", .bfloat16, [2, 3], [3, 1], record: "tensor_0/data/0", storageOffset: 0, recordSize: 12) { Double(3 * $0[0] + $0[1]) }
        let f = decodeBase64(TorchSaveFixtureData.xserTensorF32)
        let u = try TorchSaveReader.singleTensor(file: "tensor_12.pt", fileSize: f.count, read: memoryReader(f))
        check(u, in: f, key: "", .float32, [300], [1], record: "tensor_12/data/0", storageOffset: 0, recordSize: 1200) { Double($0[0]) }
        // arange(10)[4:].view(2, 3): the whole storage is saved, the view starts at element 4.
        let v = decodeBase64(TorchLoadFixtureData.viewTensor)
        let w = try TorchSaveReader.singleTensor(file: "tensor_3.pt", fileSize: v.count, read: memoryReader(v))
        check(w, in: v, key: "", .float32, [2, 3], [3, 1], record: "tensor_3/data/0", storageOffset: 4, recordSize: 40) { Double(4 + 3 * $0[0] + $0[1]) }
    }

    // MARK: Refusals

    /// A dict pickle `{key: value, ...}` (MARK ... SETITEMS), values as given.
    static func dictPickle(_ items: [(String, [UInt8])]) -> [UInt8] {
        var b = P.proto2 + [P.emptyDict, P.mark]
        for (key, value) in items { b += P.unicode(key) + value }
        return b + [0x75] + P.stop
    }

    func expectFileRefused(_ b: [UInt8], mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let error = expectRefusal(mentioning: words, sourceLocation: sourceLocation) { () throws(ShardFSError) in try stateDict(b, file: "w.pt") }
        if case .badSource(let file, _)? = error { #expect(file == "w.pt", sourceLocation: sourceLocation) }
    }

    @Test func storageSizeMismatch() throws {
        // HalfStorage of 4 elements: 8 bytes, but the record holds 6.
        let b = try torchSaveFile("w.pt", pickle: Self.dictPickle([("x", P.rebuildTensor())]), storages: [[UInt8](repeating: 0, count: 6)])
        expectFileRefused(b, mentioning: ["tensor x", "storage record w/data/0 holds 6 bytes", "4 elements of float16 (8 bytes)"])
    }

    @Test func viewOutsideItsStorage() throws {
        let storage = [[UInt8](repeating: 0, count: 8)]
        // offset 3 + (2 - 1) * 1 = element 4 of 4.
        let shifted = try torchSaveFile("w.pt", pickle: Self.dictPickle([("x", P.rebuildTensor(offset: P.int1(3)))]), storages: storage)
        expectFileRefused(shifted, mentioning: ["tensor x", "reaches element 4 of storage 0, which holds 4"])
        // shape [2, 2], strides [3, 1]: (2 - 1) * 3 + (2 - 1) * 1 = element 4.
        let strided = try torchSaveFile("w.pt", pickle: Self.dictPickle([("y", P.rebuildTensor(size: P.int1(2) + P.int1(2) + [P.tuple2],
                                                                                                 stride: P.int1(3) + P.int1(1) + [P.tuple2]))]),
                                        storages: storage)
        expectFileRefused(strided, mentioning: ["tensor y", "strides [3, 1]", "reaches element 4"])
        // An empty view may start at the end of its storage, not past it.
        let empty = P.int1(0) + [P.tuple1]
        let past = try torchSaveFile("w.pt", pickle: Self.dictPickle([("z", P.rebuildTensor(offset: P.int1(5), size: empty))]), storages: storage)
        expectFileRefused(past, mentioning: ["tensor z", "starts past the end of storage 0"])
        let atEnd = try torchSaveFile("w.pt", pickle: Self.dictPickle([("z", P.rebuildTensor(offset: P.int1(4), size: empty))]), storages: storage)
        #expect(try stateDict(atEnd).map(\.shape) == [[0]])
    }

    @Test func missingStorageRecord() throws {
        let b = try torchSaveFile("w.pt", pickle: Self.dictPickle([("x", P.rebuildTensor(key: "7"))]), storages: [[UInt8](repeating: 0, count: 8)])
        expectFileRefused(b, mentioning: ["tensor x", "storage record w/data/7 is missing"])
    }

    /// Two views naming storage 0 with different lengths.
    @Test func storageNamedInconsistently() throws {
        let pickle = Self.dictPickle([("x", P.rebuildTensor()), ("y", P.rebuildTensor(numel: 5))])
        let b = try torchSaveFile("w.pt", pickle: pickle, storages: [[UInt8](repeating: 0, count: 8)])
        expectFileRefused(b, mentioning: ["tensor y", "storage 0 is pickled as float16 x 5 here but as float16 x 4 before"])
    }

    @Test func notATensorAndDuplicateKeys() throws {
        let storage = [[UInt8](repeating: 0, count: 8)]
        expectFileRefused(try torchSaveFile("w.pt", pickle: Self.dictPickle([("x", [0x4E])]), storages: []),
                          mentioning: ["key x: the value is None, not a tensor"])
        expectFileRefused(try torchSaveFile("w.pt", pickle: Self.dictPickle([("x", P.rebuildTensor()), ("x", P.rebuildTensor())]), storages: storage),
                          mentioning: ["key x appears twice"])
        expectFileRefused(try torchSaveFile("w.pt", pickle: P.proto2 + [P.emptyList] + P.stop, storages: []),
                          mentioning: ["data.pkl holds a list, not a dict of tensors"])
    }

    /// A pickle refusal names the record it is in.
    @Test func pickleRefusalNamesTheRecord() throws {
        let b = try torchSaveFile("w.pt", pickle: P.proto2 + [0x69] + bytes("os\nsystem\n") + P.stop, storages: [])
        expectFileRefused(b, mentioning: ["record w/data.pkl: opcode INST (0x69) at byte 2"])
        let g = try torchSaveFile("w.pt", pickle: P.proto2 + P.global("os", "system") + P.stop, storages: [])
        expectFileRefused(g, mentioning: ["record w/data.pkl: global os.system"])
    }

    @Test func archiveStructure() {
        let pickle = Self.dictPickle([])
        func file(_ entries: [(String, [UInt8])]) -> [UInt8] { ZipBuilder(entries.map { ZipBuilder.Entry($0.0, $0.1) }).bytes() }
        expectFileRefused(file([("w/data.pkl", pickle), ("w/byteorder", bytes("big"))]),
                          mentioning: ["record w/byteorder says \"big\"", "little-endian"])
        expectFileRefused(file([("w/data.pkl", pickle), ("v/data/0", [])]), mentioning: ["record v/data/0 is outside the archive folder w/"])
        expectFileRefused(file([("w/x", [])]), mentioning: ["no record w/data.pkl"])
        expectFileRefused(file([("data.pkl", pickle)]), mentioning: ["record data.pkl is not inside an archive folder"])
        expectFileRefused(file([]), mentioning: ["holds no records"])
        // Any single folder name is accepted, as torch.load does.
        #expect((try? stateDict(file([("anything/data.pkl", pickle), ("anything/byteorder", bytes("little"))]))) == [])
    }

    @Test func compressedFile() {
        expectFileRefused(decodeBase64(TorchLoadFixtureData.viewsDeflated), mentioning: ["record views/data.pkl is compressed (method 8)"])
    }

    @Test func wrongKindOfFile() {
        let references = decodeBase64(TorchSaveFixtureData.xserReferences)
        expectFileRefused(references, mentioning: ["key model.embed_tokens.weight: the value is a TensorReference, not a tensor"])
        let views = decodeBase64(TorchLoadFixtureData.views)
        expectRefusal(mentioning: ["key a: the value is a tensor, not a TensorReference"]) { () throws(ShardFSError) in
            try TorchSaveReader.tensorReferences(file: "v.pt", fileSize: views.count, read: memoryReader(views))
        }
        expectRefusal(mentioning: ["data.pkl holds a dict, not a tensor"]) { () throws(ShardFSError) in
            try TorchSaveReader.singleTensor(file: "v.pt", fileSize: views.count, read: memoryReader(views))
        }
        expectRefusal(mentioning: ["a key is a string, not a tid"]) { () throws(ShardFSError) in
            try TorchSaveReader.tensorInfo(file: "v.pt", fileSize: references.count, read: memoryReader(references))
        }
    }

    @Test func referenceWithoutTID() throws {
        let reference = P.global("torch_xla.utils.serialization", "TensorReference") + [P.emptyTuple, 0x81]
        let b = try torchSaveFile("w.pt", pickle: Self.dictPickle([("k", reference)]), storages: [])
        expectRefusal(mentioning: ["key k: a TensorReference without a tid"]) { () throws(ShardFSError) in
            try TorchSaveReader.tensorReferences(file: "w.pt", fileSize: b.count, read: memoryReader(b))
        }
    }

    @Test func expertParallelInfo() {
        let b = decodeBase64(TorchLoadFixtureData.expertInfo)
        expectRefusal(mentioning: ["tid 0: expert_model_parallel is True: expert-parallel not supported yet"]) { () throws(ShardFSError) in
            try TorchSaveReader.tensorInfo(file: "ep.pt.info.pt", fileSize: b.count, read: memoryReader(b))
        }
    }

    @Test func malformedInfo() throws {
        func info(_ fields: [(String, [UInt8])]) throws -> [UInt8] {
            var b = P.proto2 + [P.emptyDict] + P.int1(0) + [P.emptyDict, P.mark]
            for (key, value) in fields { b += P.unicode(key) + value }
            return try torchSaveFile("w.pt.info.pt", pickle: b + [0x75, P.setitem] + P.stop, storages: [])
        }
        func refused(_ b: [UInt8], _ words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
            expectRefusal(mentioning: words, sourceLocation: sourceLocation) { () throws(ShardFSError) in
                try TorchSaveReader.tensorInfo(file: "w.pt.info.pt", fileSize: b.count, read: memoryReader(b))
            }
        }
        let dtype = P.global("torch", "float32")
        let shape = P.global("torch", "Size") + P.int1(3) + [P.tuple1, P.tuple1, P.reduce]
        refused(try info([("dtype", dtype)]), ["tid 0: no shape"])
        refused(try info([("shape", shape)]), ["tid 0: no dtype"])
        refused(try info([("dtype", dtype), ("shape", shape), ("device", P.unicode("cpu"))]), ["tid 0: unexpected field device"])
        refused(try info([("dtype", P.unicode("float32")), ("shape", shape)]), ["tid 0: dtype is a string"])
        let good = try info([("dtype", dtype), ("shape", shape)])
        let read = try TorchSaveReader.tensorInfo(file: "w.pt.info.pt", fileSize: good.count, read: memoryReader(good))
        #expect(read.count == 1 && read[0]?.dtype == .float32 && read[0]?.shape == [3])
    }
}
