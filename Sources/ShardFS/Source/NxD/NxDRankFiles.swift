#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The rank files of an NxD checkpoint tag (`TAG/model/`), found by name and
/// read down to located pieces: which key of which rank file holds which
/// bytes. Reads the zip directories and pickles only, never tensor data.
///
/// Names: `dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt` (plain, or xser when
/// `P.tensors/` holds the tensors: docs/formats/xser.md), or the older
/// `tp_rank_YY_pp_rank_ZZ/checkpoint.pt`. Everything else in the tag
/// (`optim/`, `scheduler.pt`, `user_content.pt`, `done`, `checkpoint`) is
/// not read.
struct NxDRankFiles {
    struct Rank {
        let tp: Int
        let pp: Int
        /// The rank file's path relative to the tag, for messages.
        let path: String
        /// Keys in file order, each with its dtype and shape.
        let keys: [(key: String, dtype: DType, shape: [Int])]
        /// Keys in file order, located; empty when `NxDRankFiles.dataOmitted`.
        let pieces: [(key: String, piece: RankPiece)]
    }

    let tpSize: Int
    let ppSize: Int
    let xser: Bool
    /// An xser tag saved with ZeRO-1 master weights and
    /// `avoid_saving_lower_precision_weights`: the rank files and their
    /// `.info.pt` name every key, but no tensor file was written (the master
    /// weights in `optim/` are the model; docs/formats/zero1.md).
    let dataOmitted: Bool
    /// tp-major, as the converter orders files.
    let ranks: [Rank]
    let files: [SourceFile]
    /// One per file of `files`.
    let fingerprints: [SourceFingerprint]

    /// The path of a rank file under the tag, whichever naming it uses.
    struct Name: Sendable {
        let tp: Int
        let pp: Int
        let path: String
    }

    /// Reads the tag's rank files; `config` (the model's) must not claim
    /// more layers than they hold.
    init(tag: String, config: ModelConfig) throws(ShardFSError) {
        let names = try NxDRankFiles.rankFileNames(tag: tag)
        tpSize = (names.map(\.tp).max() ?? -1) + 1
        ppSize = (names.map(\.pp).max() ?? -1) + 1
        var byRank: [Int: Name] = [:]
        for name in names {
            if let other = byRank[name.tp * ppSize + name.pp] {
                throw ShardFSError.badSource(file: name.path, reason: "holds the same ranks as \(other.path)")
            }
            byRank[name.tp * ppSize + name.pp] = name
        }
        for tp in 0..<tpSize {
            for pp in 0..<ppSize where byRank[tp * ppSize + pp] == nil {
                throw ShardFSError.badSource(
                    file: "model/" + RankFile.fileName(tp: tp, pp: pp),
                    reason: "missing: the tag has tp ranks 0..\(tpSize - 1) and pp ranks 0..\(ppSize - 1), so every pair needs a rank file")
            }
        }
        // xser when a rank file's tensors live in P.tensors/ (docs/formats/xser.md). NxD's
        // converter with --save_xser leaves an empty P.tensors/ beside plain
        // files: only a folder holding tensor files counts. A trainer that
        // omitted the model's data left P.info.pt and an empty P.tensors/.
        let kinds = names.map { NxDRankFiles.storage(tag: tag, path: $0.path) }
        for (first, second) in [(StoredAs.plain, StoredAs.xser), (.plain, .xserOmitted), (.xser, .xserOmitted)] {
            if let a = kinds.firstIndex(of: first), let b = kinds.firstIndex(of: second) {
                throw ShardFSError.badSource(
                    file: names[a].path, reason: "\(first.description) but \(names[b].path) \(second.description): the trainer saves a tag all one way")
            }
        }
        xser = kinds.first != .plain
        dataOmitted = kinds.first == .xserOmitted

        // Ranks are parsed in parallel (a 405B tag is up to 60,000 files),
        // each with file indexes of its own, then numbered in rank order. An
        // xser tag in two passes: the rank files' keys first, so that a
        // config.json claiming more layers than they hold is refused before
        // the tensor files are read.
        let (T, P) = (tpSize, ppSize)
        let order = (0..<T).flatMap { tp in (0..<P).map { pp in byRank[tp * P + pp]! } }
        let isXser = xser, omitted = dataOmitted
        let headers = try WorkerPool.map(items: order.count, workers: WorkerPool.cores) { (item: Int) throws(ShardFSError) -> RankHeader in
            var containment = try SourceContainment(directory: tag)
            return isXser ? try NxDRankFiles.readXserHeader(tag: tag, path: order[item].path, containment: &containment)
                          : .plain(try NxDRankFiles.readPlain(tag: tag, path: order[item].path, containment: &containment))
        }
        try LlamaWeights.checkLayerCount(config, present: LlamaWeights.layersPresent(headers.lazy.flatMap(\.keys)), holds: "the tag's rank files hold")
        let parsed = try WorkerPool.map(items: order.count, workers: WorkerPool.cores) { (item: Int) throws(ShardFSError) -> ParsedRank in
            switch headers[item] {
            case let .plain(rank): return rank
            case let .xser(references, info) where omitted:
                return try NxDRankFiles.described(path: order[item].path, references: references, info: info)
            case let .xser(references, info):
                var containment = try SourceContainment(directory: tag)
                return try NxDRankFiles.readXserTensors(tag: tag, path: order[item].path, references: references, info: info,
                                                        containment: &containment)
            }
        }
        var files: [SourceFile] = []
        var fingerprints: [SourceFingerprint] = []
        var ranks: [Rank] = []
        for (name, rank) in zip(order, parsed) {
            let base = files.count
            files += rank.files
            fingerprints += rank.fingerprints
            let keys = rank.pieces.map { ($0.key, $0.tensor.dtype, $0.tensor.shape) }
            ranks.append(Rank(tp: name.tp, pp: name.pp, path: name.path, keys: omitted ? rank.described : keys,
                              pieces: rank.pieces.map { ($0.key, RankPiece(file: base + $0.file, tensor: $0.tensor)) }))
        }
        self.ranks = ranks
        self.files = files
        self.fingerprints = fingerprints
    }

    /// One rank file read: its pieces, numbered within `files`, and the
    /// files' fingerprints (from the bytes the parse read).
    struct ParsedRank: Sendable {
        var pieces: [(key: String, file: Int, tensor: LocatedTensor)] = []
        /// The keys of a rank whose data was omitted, from its `.info.pt`.
        var described: [(key: String, dtype: DType, shape: [Int])] = []
        var files: [SourceFile] = []
        var fingerprints: [SourceFingerprint] = []
    }

    /// A rank file's first pass: a plain file whole; an xser rank file's
    /// references and `.info.pt`, its tensor files not yet read.
    enum RankHeader: Sendable {
        case plain(ParsedRank)
        case xser(references: [(key: String, tid: Int)], info: [Int: (dtype: DType, shape: [Int])])

        var keys: [String] {
            switch self {
            case let .plain(rank): return rank.pieces.map(\.key)
            case let .xser(references, _): return references.map(\.key)
            }
        }
    }

    /// How a rank file stores its tensors.
    enum StoredAs: Equatable, CustomStringConvertible {
        case plain, xser, xserOmitted

        var description: String {
            switch self {
            case .plain: return "is a plain rank file"
            case .xser: return "is xser (its tensors in P.tensors/)"
            case .xserOmitted: return "is xser without tensor data (P.info.pt and an empty P.tensors/: saved with ZeRO-1 master weights)"
            }
        }
    }

    static func storage(tag: String, path: String) -> StoredAs {
        let full = tag + "/" + path
        if holdsTensorFiles(full + ".tensors") { return .xser }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: full + ".tensors", isDirectory: &isDirectory), isDirectory.boolValue,
           FileManager.default.fileExists(atPath: RankFile.xserInfoPath(full)) {
            return .xserOmitted
        }
        return .plain
    }

    /// A rank whose tensor files were not written: its keys, dtypes and
    /// shapes from `.info.pt`.
    static func described(path: String, references: [(key: String, tid: Int)],
                          info: [Int: (dtype: DType, shape: [Int])]) throws(ShardFSError) -> ParsedRank {
        var rank = ParsedRank()
        for (key, tid) in references {
            guard let described = info[tid] else {
                throw ShardFSError.badSource(file: RankFile.xserInfoPath(path), reason: "has no entry for tensor \(tid) (\(key))")
            }
            rank.described.append((key, described.dtype, described.shape))
        }
        return rank
    }

    /// The rank files under `tag/model/`, by either naming. Refuses what
    /// ShardFS cannot read yet (expert parallelism, other data-parallel
    /// ranks) by name.
    static func rankFileNames(tag: String) throws(ShardFSError) -> [Name] {
        let model = tag + "/model"
        let entries = try Directories.list(model)
        var names: [Name] = []
        for entry in entries {
            if entry.contains("ep_rank") {
                throw ShardFSError.badSource(
                    file: "model/" + entry, reason: "is an expert-parallel rank file (ep_rank): NxD checkpoints with expert parallelism are not supported yet")
            }
            if let (dp, tp, pp) = NxDFileName.ranks(of: entry) {
                guard dp == 0 else {
                    throw ShardFSError.badSource(file: "model/" + entry, reason: "is a data-parallel rank \(dp) file; NxD saves the model from dp rank 0 only, and ShardFS reads only those")
                }
                names.append(Name(tp: tp, pp: pp, path: "model/" + entry))
            } else if let (tp, pp, _) = parseRanks(entry, pattern: ["tp_rank_", "_pp_rank_"], suffix: ""),
                      FileManager.default.fileExists(atPath: model + "/" + entry + "/checkpoint.pt") {
                names.append(Name(tp: tp, pp: pp, path: "model/" + entry + "/checkpoint.pt"))
            }
        }
        guard !names.isEmpty else {
            throw ShardFSError.badSource(
                file: model, reason: "holds no rank files (dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt or tp_rank_YY_pp_rank_ZZ/checkpoint.pt)")
        }
        return names
    }

    /// The numbers of `<p0>A<p1>B<p2>C<suffix>` (two or three of them; a
    /// missing third is 0), or nil when `entry` is not of that form.
    static func parseRanks(_ entry: String, pattern: [String], suffix: String) -> (Int, Int, Int)? {
        guard entry.hasSuffix(suffix) else { return nil }
        var rest = Substring(entry.dropLast(suffix.count))
        var numbers: [Int] = []
        for (index, prefix) in pattern.enumerated() {
            guard rest.hasPrefix(prefix) else { return nil }
            rest = rest.dropFirst(prefix.count)
            let digits = index + 1 < pattern.count ? rest.prefix { $0.isASCII && $0.isNumber } : rest
            guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(digits) else { return nil }
            numbers.append(value)
            rest = rest.dropFirst(digits.count)
        }
        guard rest.isEmpty else { return nil }
        return (numbers[0], numbers[1], numbers.count > 2 ? numbers[2] : 0)
    }

    static func holdsTensorFiles(_ directory: String) -> Bool {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return false }
        return entries.contains { $0.hasPrefix("tensor_") && $0.hasSuffix(".pt") }
    }

    static func open(tag: String, path: String, files: inout [SourceFile], containment: inout SourceContainment,
                     missing: String? = nil) throws(ShardFSError) -> (index: Int, file: SourceFile) {
        try open(tag: tag, name: SourceName(path), files: &files, containment: &containment, missing: missing)
    }

    static func open(tag: String, name: SourceName, files: inout [SourceFile], containment: inout SourceContainment,
                     missing: String? = nil) throws(ShardFSError) -> (index: Int, file: SourceFile) {
        let file = try openFile(tag: tag, name: name, containment: &containment, missing: missing)
        files.append(file)
        return (files.count - 1, file)
    }

    /// Opens a file of the tag; `missing` says why it must exist when it does not.
    static func openFile(tag: String, path: String, containment: inout SourceContainment,
                         missing: String? = nil) throws(ShardFSError) -> SourceFile {
        try openFile(tag: tag, name: SourceName(path), containment: &containment, missing: missing)
    }

    static func openFile(tag: String, name: SourceName, containment: inout SourceContainment,
                         missing: String? = nil) throws(ShardFSError) -> SourceFile {
        let path = name.string
        try containment.check(path)
        do {
            return try SourceFile(directory: tag, sourceName: name)
        } catch {
            if let missing, case let .io(_, _, code) = error, code == ENOENT { throw ShardFSError.badSource(file: path, reason: missing) }
            throw error
        }
    }

    static func readPlain(tag: String, path: String, containment: inout SourceContainment) throws(ShardFSError) -> ParsedRank {
        var rank = ParsedRank()
        let (index, file) = try open(tag: tag, path: path, files: &rank.files, containment: &containment)
        let bytes = try HeadAndTail(file)
        rank.fingerprints.append(try SourceFingerprint(file, bytes: bytes))
        let tensors = try TorchSaveReader.stateDict(file: path, fileSize: file.size, read: bytes.read)
        rank.pieces = tensors.map { ($0.key, index, $0) }
        return rank
    }

    /// xser: the reference dict at `path` names the keys, and `path.info.pt`
    /// says what each tensor is (the trainer's other ranks build zeros from it).
    static func readXserHeader(tag: String, path: String, containment: inout SourceContainment) throws(ShardFSError) -> RankHeader {
        let references = try read(tag: tag, path: path, containment: &containment) { (name, size, read) throws(ShardFSError) in
            try TorchSaveReader.tensorReferences(file: name, fileSize: size, read: read)
        }
        let info = try read(tag: tag, path: RankFile.xserInfoPath(path), containment: &containment) { (name, size, read) throws(ShardFSError) in
            try TorchSaveReader.tensorInfo(file: name, fileSize: size, read: read)
        }
        return .xser(references: references, info: info)
    }

    /// xser: each tensor is the one tensor of `path.tensors/tensor_<tid>.pt`,
    /// and must agree with what `path.info.pt` says of it.
    static func readXserTensors(tag: String, path: String, references: [(key: String, tid: Int)], info: [Int: (dtype: DType, shape: [Int])],
                                containment: inout SourceContainment) throws(ShardFSError) -> ParsedRank {
        let infoPath = RankFile.xserInfoPath(path)
        var rank = ParsedRank()
        for (key, tid) in references {
            let tensorPath = RankFile.xserTensorPath(path, tid: tid)
            guard let described = info[tid] else {
                throw ShardFSError.badSource(file: infoPath, reason: "has no entry for tensor \(tid) (\(key))")
            }
            let (index, file) = try open(tag: tag, name: SourceName(xserTensor: tid, of: path), files: &rank.files, containment: &containment,
                                         missing: "missing: \(path) names tensor \(tid) (\(key))")
            let bytes = try HeadAndTail(file)
            rank.fingerprints.append(try SourceFingerprint(file, bytes: bytes))
            let tensor = try TorchSaveReader.singleTensor(file: tensorPath, fileSize: file.size, read: bytes.read)
            guard described.dtype == tensor.dtype, described.shape == tensor.shape else {
                throw ShardFSError.badSource(
                    file: tensorPath, reason: "holds \(tensor.dtype) \(tensor.shape) but \(infoPath) says \(described.dtype) \(described.shape) for \(key)")
            }
            rank.pieces.append((key, index, LocatedTensor(
                key: key, dtype: tensor.dtype, shape: tensor.shape, strides: tensor.strides, offset: tensor.offset, storage: tensor.storage)))
        }
        return rank
    }

    /// Opens a small file of the tag just to parse it (it serves no bytes).
    static func read<T>(tag: String, path: String, containment: inout SourceContainment,
                        _ parse: (String, Int, (Int, Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) -> T) throws(ShardFSError) -> T {
        let file = try openFile(tag: tag, path: path, containment: &containment, missing: "missing from the xser tag")
        return try parse(path, file.size, try HeadAndTail(file).read)
    }
}
