import Testing
@testable import ShardFS

/// Byte equality of the xser files (docs/formats/xser.md) with real `torch.save` output:
/// the fixtures are torch.save of a dict of TensorReference objects (a
/// stand-in class under torch_xla's module name), of an `.info.pt` dict, and
/// of a single tensor (Fixtures/generate_torch_save_fixtures.py, torch 2.13,
/// CRC-32 off). Each test restates what the generator saved, rebuilds the
/// file with ShardFS from the fixture's own serialization id (and storage
/// bytes), and expects the very same bytes.
@Suite struct XserFixtureTests {
    struct Fixture {
        let fileName: String
        /// The archive name docs/formats/pt.md gives for `fileName` (restated by hand).
        let archive: String
        let bytes: [UInt8]
        let storageCount: Int
    }

    static let references = Fixture(fileName: TorchSaveFixtureData.xserReferencesFileName, archive: "dp_rank_00_tp_rank_01_pp_rank_00",
                                    bytes: decodeBase64(TorchSaveFixtureData.xserReferences), storageCount: 0)
    static let referenceKeys = ["model.embed_tokens.weight", "model.layers.0.self_attn.qkv_proj.weight_qkv", "model.norm.weight"]

    static let oneReference = Fixture(fileName: TorchSaveFixtureData.xserOneReferenceFileName, archive: "one",
                                      bytes: decodeBase64(TorchSaveFixtureData.xserOneReference), storageCount: 0)
    static let manyReferences = Fixture(fileName: TorchSaveFixtureData.xserManyReferencesFileName, archive: "refs1001",
                                        bytes: decodeBase64(TorchSaveFixtureData.xserManyReferences), storageCount: 0)

    static let info = Fixture(fileName: TorchSaveFixtureData.xserInfoFileName, archive: "dp_rank_00_tp_rank_01_pp_rank_00.pt.info",
                              bytes: decodeBase64(TorchSaveFixtureData.xserInfo), storageCount: 0)
    static let infoTensors = [
        TensorDescription(dtype: .bfloat16, shape: [2, 3]),
        TensorDescription(dtype: .float32, shape: [128256]),
        TensorDescription(dtype: .float16, shape: [4, 300, 5]),
        TensorDescription(dtype: .bfloat16, shape: []),
        TensorDescription(dtype: .float64, shape: [1, 2, 3, 4]),
        TensorDescription(dtype: .float32, shape: [7]),
    ]
    static let oneInfo = Fixture(fileName: TorchSaveFixtureData.xserOneInfoFileName, archive: "one.pt.info",
                                 bytes: decodeBase64(TorchSaveFixtureData.xserOneInfo), storageCount: 0)

    static let tensor = Fixture(fileName: TorchSaveFixtureData.xserTensorFileName, archive: "tensor_0",
                                bytes: decodeBase64(TorchSaveFixtureData.xserTensor), storageCount: 1)
    static let tensorF32 = Fixture(fileName: TorchSaveFixtureData.xserTensorF32FileName, archive: "tensor_12",
                                   bytes: decodeBase64(TorchSaveFixtureData.xserTensorF32), storageCount: 1)

    /// Checks the record order of docs/formats/pt.md ("Records, in order"; no
    /// `data/` records in a file without storages) and returns the pickle,
    /// the storages and the serialization id.
    func unpack(_ f: Fixture) throws -> (pickle: [UInt8], storages: [[UInt8]], serializationID: String) {
        #expect(!f.bytes.isEmpty)
        let a = f.archive
        let names = try TestZip.entries(f.bytes).map(\.name)
        #expect(names == ["\(a)/data.pkl", "\(a)/.format_version", "\(a)/.storage_alignment", "\(a)/byteorder"]
            + (0..<f.storageCount).map { "\(a)/data/\($0)" } + ["\(a)/version", "\(a)/.data/serialization_id"])
        let contents = try TestZip.contents(f.bytes)
        let id = contents["\(a)/.data/serialization_id"] ?? []
        #expect(id.count == 40)
        return (contents["\(a)/data.pkl"] ?? [], (0..<f.storageCount).map { contents["\(a)/data/\($0)"] ?? [] },
                String(decoding: id, as: UTF8.self))
    }

    /// ShardFS's pickle equals torch's, and so does the whole file built around it.
    func checkRebuild(_ f: Fixture, pickle: [UInt8]) throws {
        let (torchPickle, storages, id) = try unpack(f)
        expectSameBytes(pickle, torchPickle, "\(f.fileName) data.pkl")
        #expect(TorchSaveFile.archiveName(forFileName: f.fileName) == f.archive)
        let file = TorchSaveFile.file(fileName: f.fileName, pickle: pickle, storages: storages.map { [.literal($0)] },
                                      serializationID: id)
        expectSameBytes(try readWhole(file), f.bytes, f.fileName)
    }

    @Test func referenceDict() throws {
        try checkRebuild(Self.references, pickle: PickleWriter.tensorReferences(keys: Self.referenceKeys))
        let (pickle, _, _) = try unpack(Self.references)
        // The first value, as docs/formats/xser.md spells it: GLOBAL the class, BINPUT 2,
        // EMPTY_TUPLE, NEWOBJ, BINPUT 3, EMPTY_DICT, BINPUT 4, 'tid', BINPUT 5,
        // BININT1 0, SETITEM, BUILD.
        let first: [UInt8] = [0x63] + bytes("torch_xla.utils.serialization\nTensorReference\n") + [0x71, 2, 0x29, 0x81, 0x71, 3,
            0x7D, 0x71, 4, 0x58] + le32(3) + bytes("tid") + [0x71, 5, 0x4B, 0, 0x73, 0x62]
        #expect(contains(pickle, first))
        // Later values take the class and 'tid' from the memo: BINGET 2 ... BINGET 5, BININT1 1.
        #expect(contains(pickle, [0x68, 2, 0x29, 0x81, 0x71, 7, 0x7D, 0x71, 8, 0x68, 5, 0x4B, 1, 0x73, 0x62]))
        #expect(Array(pickle.suffix(2)) == [0x75, 0x2E])
    }

    @Test func oneReferenceIsABareSetitem() throws {
        try checkRebuild(Self.oneReference, pickle: PickleWriter.tensorReferences(keys: ["lm_head.weight"]))
        let (pickle, _, _) = try unpack(Self.oneReference)
        #expect(Array(pickle.prefix(6)) == [0x80, 0x02, 0x7D, 0x71, 0x00, 0x58])
        #expect(Array(pickle.suffix(3)) == [0x62, 0x73, 0x2E])  // BUILD, SETITEM, STOP
    }

    @Test func thousandAndOneReferences() throws {
        try checkRebuild(Self.manyReferences, pickle: PickleWriter.tensorReferences(keys: (0...1000).map { "k\($0)" }))
        let (pickle, _, _) = try unpack(Self.manyReferences)
        #expect(contains(pickle, [0x72] + le32(256)))  // LONG_BINPUT once the memo passes 255
        #expect(contains(pickle, [0x4D] + le16(1000)))  // tid 1000 as BININT2
    }

    @Test func infoDict() throws {
        try checkRebuild(Self.info, pickle: PickleWriter.tensorInfo(Self.infoTensors))
        let (pickle, _, _) = try unpack(Self.info)
        // docs/formats/xser.md: a dtype is GLOBAL 'torch\nbfloat16\n'; a size GLOBAL 'torch\nSize\n'
        // applied (REDUCE) to a 1-tuple holding the shape tuple: (2, 3) -> TUPLE2, BINPUT, TUPLE1, BINPUT, REDUCE.
        #expect(contains(pickle, [0x63] + bytes("torch\nbfloat16\n")))
        #expect(contains(pickle, [0x63] + bytes("torch\nSize\n") + [0x71, 5, 0x4B, 2, 0x4B, 3, 0x86, 0x71, 6, 0x85, 0x71, 7, 0x52]))
        #expect(contains(pickle, [0x4A] + le32(128256) + [0x85]))  // a dim past 65535 as BININT, a 1-dim shape as TUPLE1
        #expect(contains(pickle, [0x29, 0x85]))  // torch.Size([]): EMPTY_TUPLE inside TUPLE1
        // The field names and bfloat16 appear once each, then come from the memo.
        for text in ["dtype", "shape", "expert_model_parallel", "torch\nbfloat16\n"] {
            #expect(occurrences(pickle, bytes(text)) == 1, "\(text)")
        }
        #expect(occurrences(pickle, [0x89]) == Self.infoTensors.count)  // NEWFALSE each
    }

    @Test func oneInfoIsABareSetitem() throws {
        try checkRebuild(Self.oneInfo, pickle: PickleWriter.tensorInfo([TensorDescription(dtype: .bfloat16, shape: [8, 8])]))
        let (pickle, _, _) = try unpack(Self.oneInfo)
        #expect(Array(pickle.prefix(6)) == [0x80, 0x02, 0x7D, 0x71, 0x00, 0x4B])  // EMPTY_DICT, BINPUT 0, BININT1 (tid 0)
        #expect(Array(pickle.suffix(3)) == [0x75, 0x73, 0x2E])  // inner SETITEMS, outer SETITEM, STOP
    }

    @Test func singleTensors() throws {
        try checkRebuild(Self.tensor, pickle: PickleWriter.singleTensor(TensorDescription(dtype: .bfloat16, shape: [2, 3])))
        try checkRebuild(Self.tensorF32, pickle: PickleWriter.singleTensor(TensorDescription(dtype: .float32, shape: [300])))
        let (pickle, storages, _) = try unpack(Self.tensor)
        // The pickle is the tensor itself: the rebuild global right after PROTO,
        // with memo 0; its one storage is key '0'.
        #expect(Array(pickle.prefix(3)) == [0x80, 0x02, 0x63])
        #expect(contains(pickle, [0x63] + bytes("torch._utils\n_rebuild_tensor_v2\n") + [0x71, 0]))
        #expect(contains(pickle, [0x58] + le32(1) + bytes("0")))
        #expect(Array(pickle.suffix(4)) == [0x52, 0x71, 11, 0x2E])  // REDUCE, BINPUT 11, STOP
        #expect(storages == [[0x0000, 0x3F80, 0x4000, 0x4040, 0x4080, 0x40A0].flatMap(le16)])  // bf16 arange(6)
    }
}

/// How many times `needle` occurs in `haystack`.
func occurrences(_ haystack: [UInt8], _ needle: [UInt8]) -> Int {
    guard needle.count <= haystack.count else { return 0 }
    return (0...(haystack.count - needle.count)).filter { haystack[$0..<$0 + needle.count].elementsEqual(needle) }.count
}
