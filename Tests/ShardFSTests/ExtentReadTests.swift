import Foundation
import Testing
@testable import ShardFS

/// Real safetensors files on disk, planned with column cuts (tp 2, no
/// qkv_linear), in the source dtype and with bfloat16 -> float32 and
/// float32 -> bfloat16 conversion. Each storage record of each rank file must
/// hold exactly the bytes computed here by plain loops over the known source
/// values; and every byte range read through `ExtentReader.read(_:at:into:)`
/// must equal the same range of the file read in one go.
@Suite struct ExtentReadTests {
    // The model: L = 2, h = 8, Hq = 4, Hkv = 2 (d = 2), I = 12, V = 16.
    static let L = 2, h = 8, Hq = 4, Hkv = 2, d = 2, I = 12, V = 16

    static func configJSON(_ dtype: DType) -> String {
        """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 8,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 12, "vocab_size": 16,
         "tie_word_embeddings": false, "torch_dtype": "\(dtype.rawValue)"}
        """
    }

    /// Source tensors in the model's natural order, with their shapes.
    static let shapes: [(String, [Int])] = {
        var s: [(String, [Int])] = [("model.embed_tokens.weight", [V, h])]
        for n in 0..<L {
            let p = "model.layers.\(n)."
            s += [(p + "self_attn.q_proj.weight", [Hq * d, h]), (p + "self_attn.k_proj.weight", [Hkv * d, h]),
                  (p + "self_attn.v_proj.weight", [Hkv * d, h]), (p + "self_attn.o_proj.weight", [h, Hq * d]),
                  (p + "mlp.gate_proj.weight", [I, h]), (p + "mlp.up_proj.weight", [I, h]),
                  (p + "mlp.down_proj.weight", [h, I]),
                  (p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h])]
        }
        return s + [("model.norm.weight", [h]), ("lm_head.weight", [V, h])]
    }()

    /// Global index of each tensor's first element: element e (row-major) of
    /// tensor t is number base(t) + e. Every element gets a distinct value.
    static let base: [String: Int] = {
        var result: [String: Int] = [:]
        var next = 0
        for (name, shape) in shapes {
            result[name] = next
            next += shape.reduce(1, *)
        }
        return result
    }()

    static func shape(_ name: String) -> [Int] { shapes.first { $0.0 == name }!.1 }

    /// The source value of element number `index`, as bits: in bfloat16,
    /// 0x3F80 + index (finite, normal); in float32, the high half 0x3F80 + index
    /// and a low half cycling through ties, near-ties and plain values, so that
    /// narrowing exercises round-to-nearest-even.
    static func sourceBits(_ index: Int, _ dtype: DType) -> Int {
        switch dtype {
        case .bfloat16: return 0x3F80 + index
        case .float32: return (0x3F80 + index) << 16 | [0x0000, 0x8000, 0x7FFF, 0x8001, 0x1234, 0xC000, 0x8000][index % 7]
        default: fatalError("not used")
        }
    }

    /// Round-to-nearest-even of float32 bits to bfloat16 (finite values), by the definition.
    static func roundToBFloat16(_ f: Int) -> Int {
        let high = f >> 16, low = f & 0xFFFF
        if low > 0x8000 || (low == 0x8000 && high & 1 == 1) { return high + 1 }
        return high
    }

    /// Output bytes of the elements numbered `indices`.
    static func encode(_ indices: [Int], from source: DType, to output: DType) -> [UInt8] {
        indices.flatMap { index -> [UInt8] in
            let bits = sourceBits(index, source)
            switch (source, output) {
            case (.bfloat16, .bfloat16): return le16(bits)
            case (.bfloat16, .float32): return le32(bits << 16)  // widening is exact
            case (.float32, .float32): return le32(bits)
            case (.float32, .bfloat16): return le16(roundToBFloat16(bits))
            default: fatalError("not used")
            }
        }
    }

    /// Element numbers of rows × columns of `name`, row-major; a 1-D tensor is one row.
    static func cut(_ name: String, rows: Range<Int>? = nil, columns: Range<Int>? = nil) -> [Int] {
        let s = shape(name)
        let width = s.count == 1 ? s[0] : s[1]
        let height = s.count == 1 ? 1 : s[0]
        var out: [Int] = []
        for r in rows ?? 0..<height {
            for c in columns ?? 0..<width { out.append(base[name]! + r * width + c) }
        }
        return out
    }

    /// The rank file of (tp r, pp) as key -> elements, by hand from docs/formats/nxd-layout.md
    /// (T = 2: embed/lm_head rows 8r..., q rows 4r..., k/v rows 2r..., o columns
    /// 4r..., gate/up rows 6r..., down columns 6r...).
    static func expectedTensors(tp r: Int, layers: [Int], first: Bool, last: Bool) -> [(String, [Int])] {
        var result: [(String, [Int])] = []
        if first { result.append(("model.embed_tokens.weight", cut("model.embed_tokens.weight", rows: 8 * r..<8 * r + 8))) }
        for n in layers {
            let p = "model.layers.\(n)."
            result += [
                (p + "self_attn.q_proj.weight", cut(p + "self_attn.q_proj.weight", rows: 4 * r..<4 * r + 4)),
                (p + "self_attn.k_proj.weight", cut(p + "self_attn.k_proj.weight", rows: 2 * r..<2 * r + 2)),
                (p + "self_attn.v_proj.weight", cut(p + "self_attn.v_proj.weight", rows: 2 * r..<2 * r + 2)),
                (p + "self_attn.o_proj.weight", cut(p + "self_attn.o_proj.weight", columns: 4 * r..<4 * r + 4)),
                (p + "mlp.gate_up_proj.weight",
                 cut(p + "mlp.gate_proj.weight", rows: 6 * r..<6 * r + 6) + cut(p + "mlp.up_proj.weight", rows: 6 * r..<6 * r + 6)),
                (p + "mlp.down_proj.weight", cut(p + "mlp.down_proj.weight", columns: 6 * r..<6 * r + 6)),
                (p + "input_layernorm.weight", cut(p + "input_layernorm.weight")),
                (p + "post_attention_layernorm.weight", cut(p + "post_attention_layernorm.weight")),
            ]
        }
        if last {
            result.append(("model.norm.weight", cut("model.norm.weight")))
            result.append(("lm_head.weight", cut("lm_head.weight", rows: 8 * r..<8 * r + 8)))
        }
        return result
    }

    // MARK: Writing the checkpoint

    /// A safetensors file holding `names` in the given data order.
    static func safetensors(_ names: [String], _ dtype: DType) -> [UInt8] {
        var entries: [String] = []
        var data: [UInt8] = []
        for name in names {
            let begin = data.count
            let count = shape(name).reduce(1, *)
            data += encode(Array(base[name]!..<base[name]! + count), from: dtype, to: dtype)
            entries.append("\"\(name)\": {\"dtype\": \"\(dtype.safetensorsName)\", \"shape\": \(shape(name)), \"data_offsets\": [\(begin), \(data.count)]}")
        }
        var header = bytes("{\"__metadata__\": {\"format\": \"pt\"}, " + entries.joined(separator: ", ") + "}")
        while header.count % 8 != 0 { header.append(0x20) }
        return le64(header.count) + header + data
    }

    final class TemporaryDirectory {
        let path: String
        init() throws {
            path = FileManager.default.temporaryDirectory.appendingPathComponent("shardfs-tests-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        func write(_ name: String, _ contents: [UInt8]) throws {
            try Data(contents).write(to: URL(fileURLWithPath: path + "/" + name))
        }
        deinit { try? FileManager.default.removeItem(atPath: path) }
    }

    /// A one-file checkpoint, its tensors stored in reverse name order (so that
    /// data order differs from the model's order).
    static func singleFileCheckpoint(_ dir: TemporaryDirectory, _ dtype: DType) throws -> Checkpoint {
        try dir.write("config.json", bytes(configJSON(dtype)))
        try dir.write("model.safetensors", safetensors(shapes.map(\.0).sorted(by: >), dtype))
        return try Checkpoint(directory: dir.path)
    }

    /// A two-shard checkpoint with an index: layer 1 and lm_head in the second shard.
    static func shardedCheckpoint(_ dir: TemporaryDirectory) throws -> Checkpoint {
        let second = shapes.map(\.0).filter { $0.hasPrefix("model.layers.1.") || $0 == "lm_head.weight" }
        let first = shapes.map(\.0).filter { !second.contains($0) }
        try dir.write("config.json", bytes(configJSON(.bfloat16)))
        try dir.write("model-00001-of-00002.safetensors", safetensors(first, .bfloat16))
        try dir.write("model-00002-of-00002.safetensors", safetensors(second.reversed(), .bfloat16))
        let map = (first.map { "\"\($0)\": \"model-00001-of-00002.safetensors\"" }
            + second.map { "\"\($0)\": \"model-00002-of-00002.safetensors\"" }).joined(separator: ", ")
        try dir.write(Checkpoint.indexName, bytes("{\"metadata\": {\"total_size\": 0}, \"weight_map\": {\(map)}}"))
        return try Checkpoint(directory: dir.path)
    }

    // MARK: Checks

    /// Every storage record of every rank file holds the hand-computed bytes.
    func checkStorages(_ checkpoint: Checkpoint, _ options: LayoutOptions, source: DType, output: DType,
                       layersOfPP: [[Int]]) throws -> [VirtualFile] {
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: options)
        #expect(plan.dtype == output)
        #expect(plan.files.count == options.tpSize * options.ppSize)
        var files: [VirtualFile] = []
        for file in plan.files {
            let expected = Self.expectedTensors(tp: file.tpRank, layers: layersOfPP[file.ppRank],
                                                first: file.ppRank == 0, last: file.ppRank == options.ppSize - 1)
            #expect(file.tensors.map(\.key) == expected.map(\.0))
            let virtual = file.virtualFile(layout: options)
            let whole = try readWhole(virtual, sources: checkpoint.files)
            let contents = try TestZip.contents(whole)
            let archive = "dp_rank_00_tp_rank_0\(file.tpRank)_pp_rank_0\(file.ppRank)"
            for (index, (key, elements)) in expected.enumerated() {
                let got = contents["\(archive)/data/\(index)"] ?? []
                expectSameBytes(got, Self.encode(elements, from: source, to: output), "\(file.path) \(key)")
            }
            files.append(virtual)
        }
        return files
    }

    /// Every start with several lengths, all pairs of boundary offsets, random
    /// ranges and reads past the end, through readers with small and default
    /// scratch buffers: each equals the same range of the whole file.
    func checkRanges(_ file: VirtualFile, sources: [SourceFile], seed: UInt64) throws {
        let whole = try readWhole(file, sources: sources)
        let size = file.size
        var failures = 0
        var buffer = [UInt8](repeating: 0, count: size + 16)
        func check(_ reader: ExtentReader, _ start: Int, _ length: Int) throws {
            var count = 0
            var failure: ShardFSError?
            let same = buffer.withUnsafeMutableBytes { b -> Bool in
                let out = UnsafeMutableRawBufferPointer(rebasing: b[0..<length])
                do throws(ShardFSError) { count = try reader.read(file, at: start, into: out) } catch {
                    failure = error
                    return false
                }
                let expectedCount = max(0, min(length, size - start))
                guard count == expectedCount else { return false }
                return whole.withUnsafeBytes { w in
                    count == 0 || memcmp(out.baseAddress!, w.baseAddress! + start, count) == 0
                }
            }
            if let failure { throw failure }
            if !same {
                failures += 1
                if failures <= 3 { Issue.record("bytes \(start)..<\(start + length) (returned \(count)) differ from the whole-file read") }
            }
        }
        // Scratch of 12 bytes: 3 float32 or 6 bfloat16 elements per chunk.
        let readers = [ExtentReader(sources: sources), ExtentReader(sources: sources, scratchBytes: 12)]
        for reader in readers {
            for start in 0..<size {
                for length in [1, 2, 3, 5, 64, 131] { try check(reader, start, min(length, size - start)) }
            }
        }
        // Extent boundaries (summed here) and their neighbours: every pair up to
        // 256 bytes apart, and each to the start and the end of the file.
        var edges: Set<Int> = [0, size]
        var offset = 0
        for extent in file.extents {
            for delta in -3...3 { edges.insert(offset + delta) }
            offset += extent.byteCount
        }
        #expect(offset == size)
        let points = edges.filter { (0...size).contains($0) }.sorted()
        for (i, a) in points.enumerated() {
            try check(readers[1], 0, a)
            try check(readers[0], a, size - a)
            for b in points[i...] where b - a <= 256 { try check(readers[1], a, b - a) }
        }
        // Random ranges.
        var rng = SplitMix64(seed: seed)
        for _ in 0..<2000 {
            let start = Int.random(in: 0..<size, using: &rng)
            let length = Int.random(in: 0...(size - start), using: &rng)
            try check(readers[Int.random(in: 0...1, using: &rng)], start, length)
        }
        // Reads that run past the end return short counts.
        for start in max(0, size - 5)...(size + 3) { try check(readers[0], start, 10) }
        #expect(failures == 0)
        #expect(size > 1000)
    }

    // MARK: Tests

    @Test func columnCutsInSourceDType() throws {
        let dir = try TemporaryDirectory()
        let checkpoint = try Self.shardedCheckpoint(dir)
        #expect(checkpoint.files.count == 2)
        let options = LayoutOptions(tpSize: 2, ppSize: 1)
        let files = try checkStorages(checkpoint, options, source: .bfloat16, output: .bfloat16, layersOfPP: [[0, 1]])
        try checkRanges(files[1], sources: checkpoint.files, seed: 1)
    }

    @Test func columnCutsConvertedToFloat32() throws {
        let dir = try TemporaryDirectory()
        let checkpoint = try Self.singleFileCheckpoint(dir, .bfloat16)
        let options = LayoutOptions(tpSize: 2, ppSize: 2, dtype: .float32)
        let files = try checkStorages(checkpoint, options, source: .bfloat16, output: .float32, layersOfPP: [[0], [1]])
        #expect(files.count == 4)
        try checkRanges(files[0], sources: checkpoint.files, seed: 2)  // tp 0, pp 0
        try checkRanges(files[3], sources: checkpoint.files, seed: 3)  // tp 1, pp 1
    }

    @Test func columnCutsNarrowedToBFloat16() throws {
        let dir = try TemporaryDirectory()
        let checkpoint = try Self.singleFileCheckpoint(dir, .float32)
        let options = LayoutOptions(tpSize: 2, ppSize: 1, dtype: .bfloat16)
        let files = try checkStorages(checkpoint, options, source: .float32, output: .bfloat16, layersOfPP: [[0, 1]])
        try checkRanges(files[1], sources: checkpoint.files, seed: 4)
    }

    /// A persisted copy (VirtualFileWriter) is the served file with the real
    /// CRC-32 of each record in its data descriptor and central-directory entry.
    @Test func persistedFileCarriesCRCs() throws {
        let dir = try TemporaryDirectory()
        let checkpoint = try Self.singleFileCheckpoint(dir, .bfloat16)
        let options = LayoutOptions(tpSize: 2, ppSize: 1, dtype: .float32)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: options)
        let virtual = plan.files[1].virtualFile(layout: options)
        let served = try readWhole(virtual, sources: checkpoint.files)

        let writer = VirtualFileWriter(reader: ExtentReader(sources: checkpoint.files))
        defer { writer.close() }
        try FileManager.default.createDirectory(atPath: dir.path + "/out", withIntermediateDirectories: true)
        let path = dir.path + "/out/" + RankFile.fileName(tp: 1, pp: 0)
        let fileCRC = try writer.write(virtual, to: path)
        let written = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(written.count == served.count)
        // The returned whole-file CRC (assembled from parts) is the file's.
        #expect(fileCRC == bitwiseCRC32(written))

        var expected = served
        for entry in try TestZip.entries(served) {
            let crc = bitwiseCRC32(Array(served[entry.dataOffset..<entry.dataOffset + entry.size]))
            // Data descriptor right after the data: PK\7\8 then the CRC.
            #expect(readLE(served, entry.dataOffset + entry.size, 4) == 0x0807_4B50)
            expected.replaceSubrange(entry.dataOffset + entry.size + 4..<entry.dataOffset + entry.size + 8, with: le32(Int(crc)))
        }
        // Central directory entries: CRC at +16.
        for entry in try TestZip.entries(served) {
            let crc = bitwiseCRC32(Array(served[entry.dataOffset..<entry.dataOffset + entry.size]))
            expected.replaceSubrange(entry.centralOffset + 16..<entry.centralOffset + 20, with: le32(Int(crc)))
        }
        expectSameBytes(written, expected, "persisted file")
        #expect(!FileManager.default.fileExists(atPath: VirtualFileWriter.temporaryPath(for: path)))
    }

    /// Made recipe files are kept for the reads that follow, at most
    /// `capacity` of them, the least recently read let go first; files made
    /// at planning are never held.
    @Test func madeFilesAreKeptBoundedMostRecentLast() {
        let made = MadeFiles<Int>(capacity: 2)
        let counts = Locked([0, 0, 0])
        let recipes = (0..<3).map { i in
            PlannedFile(size: 1) {
                counts.withLock { $0[i] += 1 }
                return VirtualFile(extents: [.literal([UInt8(i)])])
            }
        }
        #expect(made.file(0, recipes[0]).size == 1)
        _ = made.file(1, recipes[1])
        _ = made.file(0, recipes[0])  // kept: not made again, now the most recent
        _ = made.file(2, recipes[2])  // 1 is let go
        #expect(counts.withLock { $0 } == [1, 1, 1])
        #expect(made.count == 2)
        _ = made.file(0, recipes[0])
        _ = made.file(1, recipes[1])
        #expect(counts.withLock { $0 } == [1, 2, 1])
        _ = made.file(7, PlannedFile(VirtualFile(extents: [.literal([9])])))
        #expect(made.count == 2)
    }

    /// A byte budget lets go of the oldest files past it, but keeps the
    /// newest even when it alone is over: its reader needs it.
    @Test func madeFilesKeepToTheirByteBudget() {
        // A literal of n bytes costs n + 64 (`VirtualFile.memoryCost`).
        let made = MadeFiles<Int>(capacity: 10, byteBudget: 300)
        let makings = Locked(0)
        func recipe(_ bytes: Int) -> PlannedFile {
            PlannedFile(size: bytes) {
                makings.withLock { $0 += 1 }
                return VirtualFile(extents: [.literal([UInt8](repeating: 1, count: bytes))])
            }
        }
        _ = made.file(0, recipe(100))  // 164
        _ = made.file(1, recipe(100))  // 328 > 300: 0 goes
        #expect(made.count == 1)
        _ = made.file(1, recipe(100))
        #expect(makings.withLock { $0 } == 2)
        _ = made.file(2, recipe(1000))  // alone over the budget, kept alone
        #expect(made.count == 1)
        _ = made.file(2, recipe(1000))
        #expect(makings.withLock { $0 } == 3)
    }

    /// A group's members are sized once, at planning, and each made by its
    /// number only when asked; a mount keeps them as it keeps any recipe.
    @Test func groupMembersAreMadeByTheirNumber() throws {
        let makings = Locked([Int]())
        let group = RecipeGroup(count: 3) { i in
            makings.withLock { $0.append(i) }
            return VirtualFile(extents: [.literal([UInt8](repeating: UInt8(i), count: i + 1))])
        }
        #expect(group.sizes == [1, 2, 3])
        makings.withLock { $0 = [] }
        let files = (0..<3).map { PlannedFile(group, member: $0) }
        #expect(files.map(\.size) == [1, 2, 3])
        #expect(files.allSatisfy { $0.isRecipe })
        #expect(makings.withLock { $0 } == [])
        #expect(literalBytes(files[2], 0..<3) == [2, 2, 2])
        let made = MadeFiles<Int>(capacity: 4)
        _ = made.file(1, files[1])
        _ = made.file(1, files[1])
        #expect(makings.withLock { $0 } == [2, 1])
    }

    /// A file held as a recipe (how xser optimizer tensor files are held) is
    /// its size alone until made; made, read, written and mapped to its
    /// sources it is the file the recipe makes, and it is made only when asked.
    @Test func recipeFileIsTheFileItMakes() throws {
        let dir = try TemporaryDirectory()
        let checkpoint = try Self.singleFileCheckpoint(dir, .bfloat16)
        let options = LayoutOptions(tpSize: 2, ppSize: 1, dtype: .float32)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: options)
        let made = plan.files[1].virtualFile(layout: options)
        let makings = Locked(0)
        let recipe = PlannedFile(size: made.size) {
            makings.withLock { $0 += 1 }
            return plan.files[1].virtualFile(layout: options)
        }
        #expect(makings.withLock { $0 } == 0)
        #expect(recipe.size == made.size)
        #expect(recipe.isRecipe && !PlannedFile(made).isRecipe)
        let whole = try readWhole(made, sources: checkpoint.files)
        expectSameBytes(try readWhole(recipe, sources: checkpoint.files), whole, "recipe read")
        #expect(makings.withLock { $0 } == 1)
        #expect(recipe.make().sourceRanges(of: 0..<recipe.size) == made.sourceRanges(of: 0..<made.size))
        #expect(recipe.sourceFileIndexes == [0])

        let writer = VirtualFileWriter(reader: ExtentReader(sources: checkpoint.files))
        defer { writer.close() }
        try FileManager.default.createDirectory(atPath: dir.path + "/out", withIntermediateDirectories: true)
        let fromRecipe = try writer.write(recipe.make(), to: dir.path + "/out/recipe.pt")
        let fromMade = try writer.write(made, to: dir.path + "/out/made.pt")
        #expect(fromRecipe == fromMade)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/out/recipe.pt"))
                == Data(contentsOf: URL(fileURLWithPath: dir.path + "/out/made.pt")))
        // `recipe(_:)` takes the size from one making; declared sources are
        // known without making.
        #expect(PlannedFile.recipe { made }.size == made.size)
        let declared = PlannedFile(size: 1, sources: [3, 5]) { Issue.record("made"); return VirtualFile(extents: [.zeros(1)]) }
        #expect(declared.sourceFileIndexes == [3, 5])
    }
}

/// CRC-32 (zip), bit by bit: independent of the library's table-driven code.
func bitwiseCRC32(_ data: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in data {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}
