import CGather
import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// `verify`'s engine: values told in decimal and hex, the first difference
/// found across chunks, the CRC used, then tags written by `Converter` from
/// the small model of ExtentReadTests (L=2, h=8, 4 Q heads, 2 KV heads,
/// head_dim 2, I=12, V=16, bf16; element number i of the source holds bits
/// 0x3F80 + i), verified ok and then damaged one defect at a time. Expected
/// values are worked out here by hand from those numbers.
@Suite struct VerifyTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory
    typealias Model = ExtentReadTests

    // MARK: Values and differences

    @Test func valuesInDecimalAndHex() {
        func text(_ dtype: DType, _ bits: UInt64) -> String { ElementValue(dtype: dtype, bits: bits).description }
        #expect(text(.bfloat16, 0x3F80) == "1 (0x3f80)")
        #expect(text(.bfloat16, 0xBF00) == "-0.5 (0xbf00)")
        // 0x3c4a is 0.0123291015625; 0.0123 is nearer to it than to 0x3c49 (0.012268...) or 0x3c4b (0.012390...).
        #expect(text(.bfloat16, 0x3C4A) == "0.0123 (0x3c4a)")
        // 0x3fa5 is 1.2890625: 1.29 reads back to it, 1.3 to 0x3fa6 (1.296875).
        #expect(text(.bfloat16, 0x3FA5) == "1.29 (0x3fa5)")
        #expect(text(.bfloat16, 0x8000) == "-0 (0x8000)")
        #expect(text(.bfloat16, 0x7FC0) == "nan (0x7fc0)")
        #expect(text(.bfloat16, 0xFF80) == "-inf (0xff80)")
        #expect(text(.float16, 0x3C00) == "1 (0x3c00)")
        #expect(text(.float16, 0x7C00) == "inf (0x7c00)")
        #expect(text(.float16, 0x0001) == "6e-8 (0x0001)")  // the smallest subnormal, 5.96e-8
        #expect(text(.float16, 0x7BFF) == "65500 (0x7bff)")  // 65504: 65500 reads back to it
        #expect(text(.float32, 0x3DCC_CCCD) == "0.1 (0x3dcccccd)")
        #expect(text(.float32, 0x4049_0FDB) == "3.1415927 (0x40490fdb)")
        #expect(text(.float64, 0x3FB9_9999_9999_999A) == "0.1 (0x3fb999999999999a)")
        #expect(text(.float64, 0xC000_0000_0000_0000) == "-2 (0xc000000000000000)")
    }

    @Test func positionsOfAnIndex() {
        #expect(ValueDifference.unravel(1093, shape: [64, 32]) == [34, 5])
        #expect(ValueDifference.unravel(7, shape: [8]) == [7])
        #expect(ValueDifference.unravel(23, shape: [2, 3, 4]) == [1, 2, 3])
    }

    /// The first differing element across chunk boundaries (chunks of 16
    /// bytes: 4 float32), both its values, and the CRC of every found byte,
    /// also past the difference.
    @Test(arguments: [0, 15, 16, 37, 63])
    func firstDifferenceAcrossChunks(at byte: Int) throws {
        let count = 64
        let expected = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
        var found = expected
        found[byte] ^= 0x40
        let buffers = ComparisonBuffers(chunkBytes: 16)
        var crc: RecordCRC? = RecordCRC()
        var progress = 0
        let difference = try StreamComparison.firstDifference(
            byteCount: count, dtype: .float32, buffers: buffers,
            expected: { range, out in out.copyBytes(from: expected[range]) },
            found: { range, out in out.copyBytes(from: found[range]) },
            crc: &crc, progress: { progress += $0 })
        let got = try #require(difference)
        #expect(got.index == byte / 4)
        let element = byte / 4 * 4
        #expect(got.expected.bits == UInt64(readLE(expected, element, 4)))
        #expect(got.found.bits == UInt64(readLE(found, element, 4)))
        #expect(crc?.value == CRC32.checksum(found))
        #expect(progress == count)
    }

    @Test func equalStreamsHaveNoDifference() throws {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        var crc: RecordCRC?
        let difference = try StreamComparison.firstDifference(
            byteCount: bytes.count, dtype: .bfloat16, buffers: ComparisonBuffers(chunkBytes: 96),
            expected: { range, out in out.copyBytes(from: bytes[range]) },
            found: { range, out in out.copyBytes(from: bytes[range]) }, crc: &crc)
        #expect(difference == nil)
    }

    /// The accelerated CRC equals zlib's for every length around its block
    /// sizes (16, 64, 256 bytes), at odd addresses, and on a large buffer.
    @Test func recordCRCEqualsZlib() {
        var random = SplitMix64(seed: 7)
        let bytes = (0..<(1 << 20) + 123).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        bytes.withUnsafeBytes { all in
            for length in Array(0..<700) + [4095, 4096, 65_537, all.count - 3] {
                for start in [0, 1, 3] where start + length <= all.count {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<start + length])
                    var crc = RecordCRC()
                    crc.update(slice)
                    var reference = CRC32()
                    reference.update(slice)
                    #expect(crc.value == reference.value, "length \(length) at \(start)")
                }
            }
            // Folded in pieces, as chunks are.
            var crc = RecordCRC()
            for piece in stride(from: 0, to: all.count, by: 1000) {
                crc.update(UnsafeRawBufferPointer(rebasing: all[piece..<min(all.count, piece + 1000)]))
            }
            var reference = CRC32()
            reference.update(all)
            #expect(crc.value == reference.value)
        }
    }

    /// A column-major tensor reads row-major: [3, 2] stored as columns
    /// (strides [1, 3]) gives its rows.
    @Test func columnMajorTensorReadsRowMajor() throws {
        let dir = try Dir()
        // Elements (row r, column c) = 10 * r + c, as bfloat16 bits, stored column by column.
        let columns = [0, 10, 20, 1, 11, 21]
        try dir.write("t", [0xAA, 0xAA] + columns.flatMap { le16($0) })
        let file = try SourceFile(directory: dir.path, name: "t")
        let record = ZipRecord(name: "a/data/0", dataOffset: 2, size: 12, crc32: 0, localHeaderOffset: 0)
        let located = LocatedTensor(key: "o", dtype: .bfloat16, shape: [3, 2], strides: [1, 3], offset: 2, storage: record)
        let found = try #require(FoundTensor(located))
        #expect(!found.isWholeRecordInOrder)
        let rows = try readWhole(VirtualFile(extents: found.extents()), sources: [file])
        #expect(rows == [0, 1, 10, 11, 20, 21].flatMap { le16($0) })
        let second = try readWhole(VirtualFile(extents: found.extents(rows: 1..<2)), sources: [file])
        #expect(second == [10, 11].flatMap { le16($0) })
        // The same values row-major are the record in order.
        let rowMajor = LocatedTensor(key: "o", dtype: .bfloat16, shape: [3, 2], strides: [2, 1], offset: 2, storage: record)
        #expect(FoundTensor(rowMajor)?.isWholeRecordInOrder == true)
    }

    @Test func keyListProblems() {
        let problems = KeyListComparison.problems(planned: ["a", "b", "c", "d"], found: ["a", "c", "b", "e"], file: "f")
        #expect(problems.map(\.kind) == [.missingKey, .extraKey, .keyOrder])
        #expect(problems[0].key == "d")
        #expect(problems[1].key == "e")
        #expect(problems[2].message == "keys out of order: key #1 is c, where the layout has b")
        #expect(KeyListComparison.problems(planned: ["a", "b"], found: ["a", "b"], file: "f").isEmpty)
    }

    // MARK: Tags

    static let tp2pp2 = LayoutOptions(tpSize: 2, ppSize: 2)
    static let rank10 = "model/dp_rank_00_tp_rank_01_pp_rank_00.pt"

    /// The model, and a tag of `layout` written by Converter under `dir/tag`.
    static func tag(_ layout: LayoutOptions, in dir: Dir) throws -> (model: Checkpoint, tag: String) {
        let model = try Model.singleFileCheckpoint(dir, .bfloat16)
        let plan = try LayoutPlanner.plan(checkpoint: model, options: layout)
        try Converter(checkpoint: model, plan: plan).run(root: dir.path + "/tag", jobs: 2)
        return (model, dir.path + "/tag")
    }

    /// Verifies `tag` against `layout` of `model`, in chunks of 64 bytes (every tensor spans several).
    static func verify(_ model: Checkpoint, _ layout: LayoutOptions, tag: String, part: Part = .whole) throws -> VerifyReport {
        let plan = try LayoutPlanner.plan(checkpoint: model, options: layout)
        return try Verifier(checkpoint: model, plan: plan, tag: tag)
            .run(options: Verifier.Options(jobs: 2, part: part, chunkBytes: 64, configPath: model.directory))
    }

    static func verdict(_ report: VerifyReport, _ path: String) throws -> FileVerdict {
        try #require(report.files.first { $0.path == path }, "no verdict on \(path)")
    }

    /// Every verdict but those on `paths` is ok.
    static func expectOthersOK(_ report: VerifyReport, except paths: Set<String>, sourceLocation: SourceLocation = #_sourceLocation) {
        for verdict in report.files where !paths.contains(verdict.path) {
            #expect(verdict.status == .ok, "\(verdict.path): \(verdict.problems.map(\.message))", sourceLocation: sourceLocation)
        }
    }

    /// Rewrites rank file `path` of `tag` as `edit` makes its planned tensors (real CRCs).
    static func rewrite(_ path: String, of tag: String, model: Checkpoint, layout: LayoutOptions,
                        _ edit: ([PlannedTensor]) -> [PlannedTensor]) throws {
        let plan = try LayoutPlanner.plan(checkpoint: model, options: layout)
        let file = try #require(plan.files.first { $0.path == path })
        let edited = RankFile(tpRank: file.tpRank, ppRank: file.ppRank, tensors: edit(file.tensors))
        try VirtualFileWriter(reader: ExtentReader(sources: model.files)).write(edited.virtualFile(layout: layout), to: tag + "/" + path)
    }

    static func bytesOf(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    static func write(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    @Test(arguments: [LayoutOptions(tpSize: 2, ppSize: 2),
                      LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, fuseQKV: true, backend: .trn2),
                      LayoutOptions(tpSize: 2, qkvLinear: true, dtype: .float32),
                      LayoutOptions(tpSize: 2, ppSize: 2, format: .xser),
                      LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, fuseQKV: true, format: .xser)])
    func convertedTagsAreOK(layout: LayoutOptions) throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(layout, in: dir)
        let report = try Self.verify(model, layout, tag: tag)
        #expect(report.files.count == layout.tpSize * layout.ppSize)
        Self.expectOthersOK(report, except: [])
        #expect(report.isOK)
        #expect(report.hints.isEmpty)
        // An NxD tag of the same layout as the source verifies the tag too.
        let source = try NxDSourceTests.openTag(tag, model, backend: layout.backend)
        let plan = try LayoutPlanner.plan(checkpoint: source, options: layout)
        #expect(try Verifier(checkpoint: source, plan: plan, tag: tag).run(options: Verifier.Options(jobs: 1)).isOK)
    }

    @Test func missingExtraAndTruncatedFiles() throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(Self.tp2pp2, in: dir)
        let gone = "model/dp_rank_00_tp_rank_00_pp_rank_01.pt", cut = "model/dp_rank_00_tp_rank_01_pp_rank_01.pt"
        try FileManager.default.removeItem(atPath: tag + "/" + gone)
        try FileManager.default.copyItem(atPath: tag + "/" + Self.rank10, toPath: tag + "/model/dp_rank_00_tp_rank_02_pp_rank_00.pt")
        let whole = try Self.bytesOf(tag + "/" + cut)
        try Self.write(Array(whole.prefix(whole.count / 2)), to: tag + "/" + cut)
        try Self.write([1, 2, 3], to: tag + "/model/notes.txt")
        let temporary = "model/.dp_rank_00_tp_rank_00_pp_rank_00.pt.shardfs-tmp-123"
        try Self.write([1, 2, 3], to: tag + "/" + temporary)

        let report = try Self.verify(model, Self.tp2pp2, tag: tag)
        #expect(!report.isOK)
        #expect(try Self.verdict(report, gone).status == .missing)
        let truncated = try Self.verdict(report, cut)
        #expect(truncated.status == .unreadable)
        #expect(truncated.problems.first?.kind == .unreadable)
        #expect(try Self.verdict(report, "model/dp_rank_00_tp_rank_02_pp_rank_00.pt").status == .extra)
        #expect(try Self.verdict(report, "model/notes.txt").status == .extra)
        #expect(try Self.verdict(report, temporary).problems.first?.message.contains("did not finish") == true)
        Self.expectOthersOK(report, except: [gone, cut, "model/dp_rank_00_tp_rank_02_pp_rank_00.pt", "model/notes.txt", temporary])
        // Extras belong to no rank file: part 0 of a split check reports them, part 1 does not.
        #expect(try Self.verify(model, Self.tp2pp2, tag: tag, part: Part(index: 0, count: 2)).count(.extra) == 3)
        let second = try Self.verify(model, Self.tp2pp2, tag: tag, part: Part(index: 1, count: 2))
        #expect(second.count(.extra) == 0)
        #expect(second.files.map(\.path) == ["model/dp_rank_00_tp_rank_01_pp_rank_00.pt", cut])
    }

    /// A byte of a tensor changed after writing: the key, the element and
    /// both values, and the record's CRC-32 named.
    @Test func changedValueAndItsCRC() throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(Self.tp2pp2, in: dir)
        var bytes = try Self.bytesOf(tag + "/" + Self.rank10)
        // Storage 2 of tp 1, pp 0 is layer 0's k_proj rows 2..<4 (of 4: Hkv*d) of [4, 8]; zero its element 3.
        let record = try #require(try TestZip.entries(bytes).first { $0.name == "dp_rank_00_tp_rank_01_pp_rank_00/data/2" })
        bytes[record.dataOffset + 6] = 0
        bytes[record.dataOffset + 7] = 0
        try Self.write(bytes, to: tag + "/" + Self.rank10)

        let report = try Self.verify(model, Self.tp2pp2, tag: tag)
        let verdict = try Self.verdict(report, Self.rank10)
        #expect(verdict.status == .wrong)
        #expect(verdict.problems.map(\.kind) == [.wrongValues, .crcMismatch])
        let values = verdict.problems[0]
        let key = "model.layers.0.self_attn.k_proj.weight"
        #expect(values.key == key)
        let difference = try #require(values.difference)
        #expect(difference.index == 3)
        #expect(difference.position == [0, 3])
        // Source element: row 2, column 3 of k_proj.
        #expect(difference.expected.bits == UInt64(0x3F80 + Model.base[key]! + 2 * 8 + 3))
        #expect(difference.found.bits == 0)
        #expect(values.message.hasPrefix("\(key) differs at element [0, 3] (index 3): expected "))
        #expect(values.message.hasSuffix("found 0 (0x0000)"))
        #expect(verdict.problems[1].message.contains("record dp_rank_00_tp_rank_01_pp_rank_00/data/2 (key \(key))"))
        Self.expectOthersOK(report, except: [Self.rank10])
    }

    /// A CRC field that disagrees with intact data is reported alone; a
    /// field of 0 (no CRC recorded) is not checked.
    @Test func crcFields() throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(Self.tp2pp2, in: dir)
        var bytes = try Self.bytesOf(tag + "/" + Self.rank10)
        let entries = try TestZip.entries(bytes)
        // The CRC at +16 of each central-directory entry.
        func centralEntry(_ name: String) throws -> Int {
            guard let entry = entries.first(where: { $0.name == name }) else { throw TestFailure("no central-directory entry for \(name)") }
            return entry.centralOffset
        }
        let damaged = try centralEntry("dp_rank_00_tp_rank_01_pp_rank_00/data/0")
        bytes[damaged + 16] ^= 0xFF
        let unrecorded = try centralEntry("dp_rank_00_tp_rank_01_pp_rank_00/data/1")
        bytes.replaceSubrange(unrecorded + 16..<unrecorded + 20, with: [0, 0, 0, 0])
        let pickle = try centralEntry("dp_rank_00_tp_rank_01_pp_rank_00/data.pkl")
        bytes[pickle + 17] ^= 0x01
        try Self.write(bytes, to: tag + "/" + Self.rank10)

        let verdict = try Self.verdict(try Self.verify(model, Self.tp2pp2, tag: tag), Self.rank10)
        #expect(verdict.problems.map(\.kind) == [.crcMismatch, .crcMismatch])
        #expect(verdict.problems[0].message.contains("data/0 (key model.embed_tokens.weight)"))
        #expect(verdict.problems[1].message.contains("data.pkl"))
    }

    @Test func keysDTypesAndShapes() throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(Self.tp2pp2, in: dir)
        // tp-major: (0, 0), (0, 1), (1, 0), (1, 1); pp 0 holds layer 0, pp 1 layer 1.
        let files = (0..<2).flatMap { tp in (0..<2).map { pp in "model/dp_rank_00_tp_rank_0\(tp)_pp_rank_0\(pp).pt" } }
        try Self.rewrite(files[0], of: tag, model: model, layout: Self.tp2pp2) { Array($0.dropLast()) }
        try Self.rewrite(files[1], of: tag, model: model, layout: Self.tp2pp2) { tensors in
            tensors + [PlannedTensor(key: "model.extra.weight", dtype: .bfloat16, shape: tensors[0].shape, blocks: tensors[0].blocks)]
        }
        try Self.rewrite(files[2], of: tag, model: model, layout: Self.tp2pp2) { tensors in
            var t = tensors
            t.swapAt(1, 2)
            return t
        }
        try Self.rewrite(files[3], of: tag, model: model, layout: Self.tp2pp2) { tensors in
            tensors.enumerated().map { index, t in
                switch index {
                case 0: return PlannedTensor(key: t.key, dtype: .float32, shape: t.shape, blocks: t.blocks)
                case 1: return PlannedTensor(key: t.key, dtype: t.dtype, shape: [t.elementCount], blocks: t.blocks)
                default: return t
                }
            }
        }
        let report = try Self.verify(model, Self.tp2pp2, tag: tag)
        let missing = try Self.verdict(report, files[0]).problems
        #expect(missing.map(\.kind) == [.missingKey])
        #expect(missing.first?.key == "model.layers.0.post_attention_layernorm.weight")
        #expect(try Self.verdict(report, files[1]).problems.map(\.kind) == [.extraKey])
        let order = try Self.verdict(report, files[2]).problems
        #expect(order.map(\.kind) == [.keyOrder])
        #expect(order.first?.message == "keys out of order: key #1 is model.layers.0.self_attn.k_proj.weight, where the layout has model.layers.0.self_attn.q_proj.weight")
        let kinds = try Self.verdict(report, files[3]).problems
        #expect(kinds.map(\.kind) == [.wrongDType, .wrongShape])
        #expect(kinds.first?.message == "model.layers.1.self_attn.q_proj.weight is float32, the layout wants bfloat16")
        #expect(kinds.last?.message == "model.layers.1.self_attn.k_proj.weight has shape [16], the layout wants [2, 8]")
    }

    /// K/V heads tiled (trn1's rule) where trn2 wants them repeated in a
    /// row, with trn2's Q order: NxD's converter on trn2. T=4, Hkv=2, m=2:
    /// rank r wants KV head r/2; tiled, it holds r%2: ranks 1 and 2 differ.
    @Test func kvHeadsGroupedWrongly() throws {
        let dir = try Dir()
        let trn2 = LayoutOptions(tpSize: 4, kvSizeMultiplier: 2, qkvLinear: true, fuseQKV: true, backend: .trn2)
        var trn1 = trn2
        trn1.backend = .trn1
        let (model, tag) = try Self.tag(trn2, in: dir)
        let tiled = try LayoutPlanner.plan(checkpoint: model, options: trn1)
        for file in tiled.files {
            try Self.rewrite(file.path, of: tag, model: model, layout: trn2) { tensors in
                tensors.map { t in
                    guard t.key.hasSuffix("weight_qkv"), let tiledQKV = file.tensors.first(where: { $0.key == t.key }) else { return t }
                    // trn2's Q block, trn1's K and V blocks.
                    return PlannedTensor(key: t.key, dtype: t.dtype, shape: t.shape, blocks: [t.blocks[0]] + tiledQKV.blocks.dropFirst())
                }
            }
        }
        let report = try Self.verify(model, trn2, tag: tag)
        for tp in 0..<4 {
            let verdict = try Self.verdict(report, "model/dp_rank_00_tp_rank_0\(tp)_pp_rank_00.pt")
            guard tp == 1 || tp == 2 else {
                #expect(verdict.status == .ok, "tp \(tp)")
                continue
            }
            #expect(verdict.problems.map(\.key) == ["model.layers.0.self_attn.qkv_proj.weight_qkv", "model.layers.1.self_attn.qkv_proj.weight_qkv"])
            let wanted = tp / 2, held = tp % 2
            let problem = try #require(verdict.problems.first)
            // Rows: 2 of Q (one head), then K (one head, rows 2..<4), then V (rows 4..<6).
            #expect(problem.kvHeads == [KVHeadFinding(projection: "K", row: 2, wanted: wanted, found: held),
                                        KVHeadFinding(projection: "V", row: 4, wanted: wanted, found: held)])
            #expect(problem.message.contains("K and V rows hold KV head \(held), the layout (trn2, kv multiplier 2) wants KV head \(wanted)"))
            #expect(problem.message.contains("tiled as on trn1"))
            #expect(problem.difference?.position == [2, 0])
        }
    }

    @Test func xserDefects() throws {
        let dir = try Dir()
        let layout = LayoutOptions(tpSize: 2, ppSize: 2, format: .xser)
        let (model, tag) = try Self.tag(layout, in: dir)
        let plan = try LayoutPlanner.plan(checkpoint: model, options: layout)
        let p = Self.rank10, q = "model/dp_rank_00_tp_rank_00_pp_rank_01.pt", r = "model/dp_rank_00_tp_rank_01_pp_rank_01.pt"
        // p: tensor 3 gone, a stray tensor file; q: its .info.pt says float32 for tensor 0; r: no .info.pt.
        try FileManager.default.removeItem(atPath: tag + "/" + RankFile.xserTensorPath(p, tid: 3))
        try FileManager.default.copyItem(atPath: tag + "/" + RankFile.xserTensorPath(p, tid: 0), toPath: tag + "/" + p + ".tensors/tensor_99.pt")
        let qFile = try #require(plan.files.first { $0.path == q })
        var descriptions = qFile.tensors.map(\.torchDescription)
        descriptions[0] = TensorDescription(dtype: .float32, shape: descriptions[0].shape)
        let info = TorchSaveFile.file(fileName: q + ".info.pt", pickle: PickleWriter.tensorInfo(descriptions), storages: [],
                                      serializationID: TorchSaveFile.serializationID(seed: "test"))
        try Self.write(try readWhole(info), to: tag + "/" + q + ".info.pt")
        try FileManager.default.removeItem(atPath: tag + "/" + r + ".info.pt")

        let report = try Self.verify(model, layout, tag: tag)
        let pProblems = try Self.verdict(report, p).problems
        #expect(pProblems.map(\.kind) == [.missingFile, .extraFile])
        #expect(pProblems[0].file == RankFile.xserTensorPath(p, tid: 3))
        #expect(pProblems[0].key == "model.layers.0.self_attn.v_proj.weight")
        #expect(pProblems[1].file == p + ".tensors/tensor_99.pt")
        let qProblems = try Self.verdict(report, q).problems
        #expect(qProblems.map(\.kind) == [.infoMismatch])
        #expect(qProblems.first?.file == q + ".info.pt")
        #expect(qProblems.first?.message.contains("says float32 [4, 8] for tensor 0 (model.layers.1.self_attn.q_proj.weight)") == true)
        let rProblems = try Self.verdict(report, r).problems
        #expect(rProblems.map(\.kind) == [.missingFile])
        #expect(rProblems.first?.file == r + ".info.pt")
        Self.expectOthersOK(report, except: [p, q, r])
    }

    /// A tag of another layout: every file named, and a hint saying what the tag holds.
    @Test func anotherLayoutIsNamed() throws {
        let dir = try Dir()
        let (model, tag) = try Self.tag(LayoutOptions(tpSize: 2), in: dir)
        let report = try Self.verify(model, LayoutOptions(tpSize: 4), tag: tag)
        #expect(report.count(.missing) == 2)
        #expect(report.count(.wrong) == 2)
        #expect(report.hints == ["TAG/model holds rank files of tp-size 2 x pp-size 1; the layout checked has tp-size 4 x pp-size 1"])
        // Same file names, another layout: inferred from the files.
        let other = try Self.verify(model, LayoutOptions(tpSize: 2, qkvLinear: true), tag: tag)
        #expect(other.count(.wrong) == 2)
        #expect(other.hints.count == 1)
        #expect(other.hints.first?.contains("another layout: tp=2 pp=1 vpp=1 kv_mult=1 trn1 bfloat16") == true)
        // The wrong format.
        let xser = try Self.verify(model, LayoutOptions(tpSize: 2, format: .xser), tag: tag)
        #expect(xser.hints.contains { $0.contains("without --format xser") })
    }
}
