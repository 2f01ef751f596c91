import Testing
@testable import ShardFS

/// DCP `.metadata`: the reader on a file torch 2.13's dcp.save wrote (its
/// content restated by hand from `pickletools.dis`), the writer against
/// CPython's own protocol-2 pickle of the same objects
/// (Fixtures/generate_dcp_metadata_fixtures.py), and hostile files, each
/// refused naming what is wrong.
@Suite struct DCPMetadataTests {
    typealias Chunk = DCPMetadata.Chunk
    typealias Location = DCPMetadata.Location

    static func tensor(_ dtype: DType, _ size: [Int], _ chunks: [Chunk]) -> DCPMetadata.Entry {
        .tensor(DCPMetadata.TensorEntry(dtype: dtype, size: size, chunks: chunks))
    }

    func parse(_ bytes: [UInt8]) throws(ShardFSError) -> DCPMetadata {
        try DCPMetadata.parse(bytes, file: "ckpt/.metadata")
    }

    // MARK: (a) A file torch wrote

    /// generate_dcp_metadata_fixtures.py's small_state_dict(): w (float32
    /// 2x3), s (bfloat16, 0-dim), lr (0.5), t ((1, "a")), opt = {state: {x:
    /// float16 [2]}, step: 3}. Bytes items first in storage_data, each 1261
    /// bytes; tensors 1577 (torch.save of each, in one file).
    @Test func readsWhatTorchWrote() throws {
        let m = try parse(decodeBase64(DCPMetadataFixtureData.torchSmall))
        #expect(m.entries.map(\.fqn) == ["w", "s", "lr", "t", "opt.state.x", "opt.step"])
        #expect(m.entries.map(\.entry) == [
            Self.tensor(.float32, [2, 3], [Chunk(offsets: [0, 0], sizes: [2, 3])]),
            Self.tensor(.bfloat16, [], [Chunk(offsets: [], sizes: [])]),
            .bytes,
            .bytes,
            Self.tensor(.float16, [2], [Chunk(offsets: [0], sizes: [2])]),
            .bytes,
        ])
        #expect(m.plannerData.map(\.fqn) == ["w", "s", "lr", "t", "opt.state.x", "opt.step"])
        #expect(m.plannerData.map(\.path) == [["w"], ["s"], ["lr"], ["t"], ["opt", "state", "x"], ["opt", "step"]])
        #expect(m.locations == [
            Location(fqn: "lr", chunkOffsets: nil, chunkIndex: nil, relativePath: "__0_0.distcp", offset: 0, length: 1261),
            Location(fqn: "t", chunkOffsets: nil, chunkIndex: nil, relativePath: "__0_0.distcp", offset: 1261, length: 1261),
            Location(fqn: "opt.step", chunkOffsets: nil, chunkIndex: nil, relativePath: "__0_0.distcp", offset: 2522, length: 1261),
            Location(fqn: "w", chunkOffsets: [0, 0], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 3783, length: 1577),
            Location(fqn: "s", chunkOffsets: [], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 5360, length: 1577),
            Location(fqn: "opt.state.x", chunkOffsets: [0], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 6937, length: 1577),
        ])
        #expect(m.saveID == "00000000-0000-4000-8000-000000000001")
        #expect(m.version == "1.0.0")
    }

    /// Python 3.14's pickle.dump writes protocol 5 by default: the same opcodes here.
    @Test func readsProtocol5() throws {
        let m = try parse(decodeBase64(DCPMetadataFixtureData.torchSmallProtocol5))
        #expect(m.entries.map(\.fqn) == ["w", "s", "lr", "t", "opt.state.x", "opt.step"])
        #expect(m.locations.map(\.offset) == [0, 1261, 2522, 3783, 5360, 6937])
        #expect(m.saveID == "00000000-0000-4000-8000-000000000001")
    }

    /// The generic reader sees the same file as DCP's objects, as data.
    @Test func treeOfTorchsFile() throws {
        let value = try PickleReader.parse(decodeBase64(DCPMetadataFixtureData.torchSmall), file: "m", allowList: .dcpMetadata)
        guard case .instance(.metadata, let arguments, .dict(let fields, ordered: false)?) = value else {
            Issue.record("the root is \(value.kindName), not a built Metadata")
            return
        }
        #expect(arguments.isEmpty)
        #expect(fields.map(\.key) == ["state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version"].map { .string($0) })
    }

    // MARK: (b) The writer, against CPython's pickle

    /// generate_dcp_metadata_fixtures.py's python_pickled(): a sharded
    /// tensor (2 chunks in 2 files), a 0-dim one, a 4-part planner path, a
    /// name that is also a path part, dims >= 2^16 and a length >= 2^31.
    static let handBuilt = DCPMetadata(
        entries: [
            ("model.w", tensor(.float32, [4, 6], [Chunk(offsets: [0, 0], sizes: [2, 6]), Chunk(offsets: [2, 0], sizes: [2, 6])])),
            ("model.s", tensor(.bfloat16, [], [Chunk(offsets: [], sizes: [])])),
            ("optimizer.state.model.w.exp_avg", tensor(.float64, [70000], [Chunk(offsets: [0], sizes: [70000])])),
            ("optimizer.param_groups.lr", .bytes),
            ("h", tensor(.float16, [0, 3], [Chunk(offsets: [0, 0], sizes: [0, 3])])),
        ],
        plannerData: [
            ("model.w", ["model", "w"]),
            ("model.s", ["model", "s"]),
            ("optimizer.state.model.w.exp_avg", ["optimizer", "state", "model.w", "exp_avg"]),
            ("optimizer.param_groups.lr", ["optimizer", "param_groups.lr"]),
            ("h", ["h"]),
        ],
        locations: [
            Location(fqn: "optimizer.param_groups.lr", chunkOffsets: nil, chunkIndex: nil, relativePath: "__0_0.distcp", offset: 0, length: 1261),
            Location(fqn: "model.w", chunkOffsets: [0, 0], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 1261, length: 1000),
            Location(fqn: "model.w", chunkOffsets: [2, 0], chunkIndex: 1, relativePath: "__1_0.distcp", offset: 0, length: 1000),
            Location(fqn: "model.s", chunkOffsets: [], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 2261, length: 800),
            Location(fqn: "optimizer.state.model.w.exp_avg", chunkOffsets: [0], chunkIndex: 0, relativePath: "__1_0.distcp",
                     offset: 1000, length: 3_000_000_000),
            Location(fqn: "h", chunkOffsets: [0, 0], chunkIndex: 0, relativePath: "__0_0.distcp", offset: 3061, length: 700),
        ],
        saveID: "7d2f0f6e-5a38-4c71-9a55-1b0c0e3d9a42", version: "1.0.0")

    /// python_pickled_bare(): one item everywhere, no storage_meta, no version.
    static let bare = DCPMetadata(
        entries: [("x", .bytes)], plannerData: [("x", ["x"])],
        locations: [Location(fqn: "x", chunkOffsets: nil, chunkIndex: nil, relativePath: "__0_0.distcp", offset: 0, length: 5)],
        saveID: nil, version: nil)

    @Test func writesWhatCPythonWrites() {
        expectSameBytes(Self.handBuilt.pickled(), decodeBase64(DCPMetadataFixtureData.pythonPickled), "handBuilt")
        expectSameBytes(Self.bare.pickled(), decodeBase64(DCPMetadataFixtureData.pythonPickledBare), "bare")
    }

    @Test func roundTrips() throws {
        #expect(try parse(Self.handBuilt.pickled()) == Self.handBuilt)
        #expect(try parse(Self.bare.pickled()) == Self.bare)
        // torch's file, written again by ShardFS: the same content.
        let torchs = try parse(decodeBase64(DCPMetadataFixtureData.torchSmall))
        #expect(try parse(torchs.pickled()) == torchs)
    }

    // MARK: (c) Hostile files

    func expectRefused(_ bytes: [UInt8], mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        expectRefusal(mentioning: ["ckpt/.metadata: "] + words, sourceLocation: sourceLocation) { () throws(ShardFSError) in try parse(bytes) }
    }

    /// `handBuilt` changed by `change`, pickled by the writer (which
    /// writesWhatCPythonWrites checks): content the reader must refuse.
    func expectRefused(_ change: (inout DCPMetadata) -> Void, mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        var m = Self.handBuilt
        change(&m)
        expectRefused(m.pickled(), mentioning: words, sourceLocation: sourceLocation)
    }

    /// A protocol-4 pickle of one frame holding `body`.
    static func framed(_ body: [UInt8]) -> [UInt8] { [0x80, 0x04, 0x95] + le64(body.count) + body }
    static func shortUnicode(_ s: String) -> [UInt8] { [0x8C, UInt8(s.utf8.count)] + Array(s.utf8) }

    @Test func codeIsRefusedByName() {
        // os.system by STACK_GLOBAL (at byte 25: PROTO, FRAME, two strings, two MEMOIZE).
        let osSystem = Self.framed(Self.shortUnicode("os") + [0x94] + Self.shortUnicode("system") + [0x94, 0x93]
                                   + Self.shortUnicode("ls") + [0x85, 0x52, 0x2E])
        expectRefused(osSystem, mentioning: ["global os.system (STACK_GLOBAL at byte 25)", "allow-list"])
        // builtins.eval by protocol 2's GLOBAL.
        expectRefused([0x80, 0x02, 0x63] + bytes("builtins\neval\n") + [0x2E], mentioning: ["global builtins.eval (GLOBAL at byte 2)"])
        // torch.save's own globals are not DCP's.
        expectRefused([0x80, 0x02, 0x63] + bytes("torch._utils\n_rebuild_tensor_v2\n") + [0x2E],
                      mentioning: ["global torch._utils._rebuild_tensor_v2", "allow-list"])
        // An allowed class called in a way DCP's pickle never does.
        expectRefused([0x80, 0x02, 0x63] + bytes("torch.distributed.checkpoint.metadata\nMetadata\n") + [0x29, 0x52, 0x2E],
                      mentioning: ["REDUCE at byte", "calls torch.distributed.checkpoint.metadata.Metadata"])
        // INST: protocol 0's call, no opcode DCP writes.
        expectRefused([0x80, 0x04, 0x69] + bytes("os\nsystem\n") + [0x2E], mentioning: ["opcode INST (0x69) at byte 2"])
    }

    @Test func truncatedFilesAreRefused() {
        let whole = decodeBase64(DCPMetadataFixtureData.torchSmall)
        expectRefused([], mentioning: ["the pickle is empty"])
        for length in 1..<whole.count {
            expectRefused(Array(whole.prefix(length)), mentioning: ["truncated"])
        }
        // The frame announces 1349 bytes: a cut file says so before anything runs.
        expectRefused(Array(whole.prefix(700)), mentioning: ["truncated: FRAME at byte 2 announces 1349 bytes, the pickle ends at byte 700"])
        let written = Self.handBuilt.pickled()
        for length in 1..<written.count {
            expectRefused(Array(written.prefix(length)), mentioning: ["truncated"])
        }
    }

    @Test func chunksMustLieInsideTheirTensor() {
        expectRefused({ $0.entries[0].entry = Self.tensor(.float32, [4, 6], [Chunk(offsets: [0, 0], sizes: [2, 6]), Chunk(offsets: [3, 0], sizes: [2, 6])]) },
                      mentioning: ["tensor model.w: chunk 1 (offsets [3, 0], sizes [2, 6]) lies outside the tensor's size [4, 6]"])
        expectRefused({ $0.entries[0].entry = Self.tensor(.float32, [4, 6], [Chunk(offsets: [0, 0], sizes: [2, 6]), Chunk(offsets: [2], sizes: [2])]) },
                      mentioning: ["tensor model.w: chunk 1 (offsets [2], sizes [2]) is not of the rank of the tensor's size [4, 6]"])
        expectRefused({ $0.entries[0].entry = Self.tensor(.float32, [4, 6], [Chunk(offsets: [0, 0], sizes: [2, 6]), Chunk(offsets: [0, 0], sizes: [4, 6])]) },
                      mentioning: ["tensor model.w: chunk 1 (offsets [0, 0], sizes [4, 6]) starts where an earlier chunk does"])
        expectRefused({ $0.entries[1].entry = Self.tensor(.bfloat16, [], []) }, mentioning: ["tensor model.s has no chunks"])
        // A negative dimension is refused as the torch.Size is read.
        expectRefused({ $0.entries[4].entry = Self.tensor(.float16, [0, -3], [Chunk(offsets: [0, 0], sizes: [0, 3])]) },
                      mentioning: ["the dimensions of torch.Size holds -3, a negative number"])
    }

    @Test func everyItemHasExactlyOneLocation() {
        expectRefused({ $0.locations.remove(at: 2) }, mentioning: ["tensor model.w: chunk 1 (offsets [2, 0]) has no location in storage_data"])
        expectRefused({ $0.locations.remove(at: 0) }, mentioning: ["bytes item optimizer.param_groups.lr has no location in storage_data"])
        expectRefused({ $0.locations.append($0.locations[2]) },
                      mentioning: ["tensor model.w: chunk 1 (offsets [2, 0]) has two locations in storage_data"])
        expectRefused({ $0.locations.append($0.locations[0]) },
                      mentioning: ["bytes item optimizer.param_groups.lr has two locations in storage_data"])
        expectRefused({ $0.locations[2] = Location(fqn: "model.w", chunkOffsets: [1, 0], chunkIndex: 1, relativePath: "__1_0.distcp", offset: 0, length: 1000) },
                      mentioning: ["storage_data[model.w]: the location at offsets [1, 0] is of none of the tensor's chunks"])
        expectRefused({ $0.locations[0] = Location(fqn: "optimizer.param_groups.lr", chunkOffsets: [0], chunkIndex: 0, relativePath: "a", offset: 0, length: 1) },
                      mentioning: ["storage_data[optimizer.param_groups.lr]: optimizer.param_groups.lr is a bytes item, but its location has chunk offsets"])
        expectRefused({ $0.locations.append(Location(fqn: "nope", chunkOffsets: nil, chunkIndex: nil, relativePath: "a", offset: 0, length: 1)) },
                      mentioning: ["storage_data[nope]: state_dict_metadata has no nope"])
    }

    @Test func locationsStayInTheFolder() {
        for path in ["../x.distcp", "/etc/passwd", "sub/x.distcp", "..", "", "a\u{0}b"] {
            expectRefused({ $0.locations[0] = Location(fqn: "optimizer.param_groups.lr", chunkOffsets: nil, chunkIndex: nil, relativePath: path, offset: 0, length: 1) },
                          mentioning: ["storage_data[optimizer.param_groups.lr]: the relative path", "is not a file name in the checkpoint folder"])
        }
        expectRefused({ $0.locations[1] = Location(fqn: "model.w", chunkOffsets: [0, 0], chunkIndex: 0, relativePath: "a", offset: -1, length: 10) },
                      mentioning: ["storage_data[model.w]: 10 bytes at offset -1"])
        expectRefused({ $0.locations[1] = Location(fqn: "model.w", chunkOffsets: [0, 0], chunkIndex: 0, relativePath: "a", offset: Int.max, length: 1) },
                      mentioning: ["storage_data[model.w]: 1 bytes at offset 9223372036854775807"])
    }

    @Test func namesAreUnique() {
        expectRefused({ $0.entries.append(("h", .bytes)) }, mentioning: ["h appears twice in state_dict_metadata"])
        expectRefused({ $0.plannerData.append(("h", ["h"])) }, mentioning: ["planner_data lists h twice"])
        expectRefused({ $0.plannerData.append(("g", ["g"])) }, mentioning: ["planner_data lists g, which state_dict_metadata does not"])
    }

    /// requires_grad (True for a Parameter saved as it is) says nothing
    /// about the bytes: read, and not kept.
    @Test func requiresGradIsIgnored() throws {
        var b = decodeBase64(DCPMetadataFixtureData.torchSmall)
        // w's properties: _get_layout(...) REDUCE, MEMOIZE, then requires_grad NEWFALSE -> NEWTRUE.
        let at = try #require(firstRange(of: [0x52, 0x94, 0x89], in: b))
        b[at.upperBound - 1] = 0x88
        let m = try parse(b)
        #expect(m.entries[0].fqn == "w")
        #expect(m.entries[0].entry == Self.tensor(.float32, [2, 3], [Chunk(offsets: [0, 0], sizes: [2, 3])]))
    }

    // Protocol-2 pieces, for pickles torch never writes.
    static let metadataModule = "torch.distributed.checkpoint.metadata\n"
    static func global(_ moduleAndName: String) -> [UInt8] { [0x63] + bytes(moduleAndName) }
    static func unicode(_ s: String) -> [UInt8] { [0x58] + le32(s.utf8.count) + bytes(s) }
    /// torch.Size((0,)): BININT1 0, TUPLE1, TUPLE1, REDUCE.
    static let size0 = global("torch\nSize\n") + [0x4B, 0, 0x85, 0x85, 0x52]

    /// Python copies a state dict into the object at BUILD; the reader, which
    /// does not, refuses to see the dict change afterwards.
    @Test func stateDictsAreFrozenByBuild() {
        // BytesStorageMetadata(), EMPTY_DICT BINPUT 0, BUILD, BINGET 0, 'a' 'b' SETITEM.
        let b: [UInt8] = [0x80, 0x02] + Self.global(Self.metadataModule + "BytesStorageMetadata\n")
            + [0x29, 0x81, 0x7D, 0x71, 0, 0x62, 0x68, 0] + Self.unicode("a") + Self.unicode("b") + [0x73, 0x2E]
        expectRefused(b, mentioning: ["SETITEM at byte", "sets items of a dict already given to BUILD as an object's state"])
    }

    /// One TensorStorageMetadata of 2000 chunks (one chunk object, from the
    /// memo) under ten names: a few kilobytes that would read as 20000
    /// chunks. Refused for the work, before any other check.
    @Test func sharedObjectsCannotMultiplyTheWork() {
        let chunk = Self.global(Self.metadataModule + "ChunkStorageMetadata\n") + [0x29, 0x81, 0x71, 1, 0x7D, 0x28]
            + Self.unicode("offsets") + Self.size0 + Self.unicode("sizes") + Self.size0 + [0x75, 0x62]
        let properties = Self.global(Self.metadataModule + "TensorProperties\n") + [0x29, 0x81, 0x28] + Self.global("torch\nfloat32\n")
            + Self.global("torch.serialization\n_get_layout\n") + Self.unicode("torch.strided") + [0x85, 0x52, 0x89]
            + Self.global(Self.metadataModule + "_MEM_FORMAT_ENCODING\n") + [0x4B, 0, 0x85, 0x52, 0x89, 0x74, 0x62]
        let tensor = Self.global(Self.metadataModule + "TensorStorageMetadata\n") + [0x29, 0x81, 0x71, 0, 0x7D, 0x28]
            + Self.unicode("properties") + properties + Self.unicode("size") + Self.size0
            + Self.unicode("chunks") + [0x5D, 0x28] + chunk + Array([[UInt8]](repeating: [0x68, 1], count: 1999).joined()) + [0x65]
            + [0x75, 0x62]
        var entries = Self.unicode("e0") + tensor
        for n in 1..<10 { entries += Self.unicode("e\(n)") + [0x68, 0] }
        let b = [0x80, 0x02] + Self.global(Self.metadataModule + "Metadata\n") + [0x29, 0x81, 0x7D, 0x28]
            + Self.unicode("state_dict_metadata") + [0x7D, 0x28] + entries + [0x75] + [0x75, 0x62, 0x2E]
        expectRefused(b, mentioning: ["takes more steps than its length allows"])
    }

    /// torch's metadata of what ShardFS cannot represent: refused naming the item.
    @Test func unsupportedContentIsRefusedNamingTheItem() {
        expectRefused(decodeBase64(DCPMetadataFixtureData.torchInt64),
                      mentioning: ["tensor i has dtype torch.int64: ShardFS reads floating-point tensors only"])
        expectRefused(decodeBase64(DCPMetadataFixtureData.torchList),
                      mentioning: ["planner_data[x.0]: the path holds the list index 0"])
        expectRefused(decodeBase64(DCPMetadataFixtureData.pythonTransformed),
                      mentioning: ["storage_data[x]: the item is stored transformed (transform_descriptors [\"zstd\"])"])
    }
}

/// Where `needle` first occurs in `haystack`.
private func firstRange(of needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
    guard needle.count <= haystack.count else { return nil }
    for start in 0...(haystack.count - needle.count) where Array(haystack[start..<start + needle.count]) == needle {
        return start..<start + needle.count
    }
    return nil
}
