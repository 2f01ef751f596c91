import Foundation

/// The ZeRO-1 optimizer state of a training tag (`TAG/optim/`, docs/formats/zero1.md):
/// every (dp, tp, pp) file read, checked against the others and against the
/// model's rank files, each parameter index named, and each state tensor of
/// each parameter (`exp_avg`, `exp_avg_sq`, the master weight) as a piece
/// in DP shards of that rank, for the inverse layout to turn into Hugging
/// Face-named tensors as it does the weights.
struct ZeroOptimizerTag: Sendable {
    let dpSize: Int
    let xser: Bool
    /// The files serving the state's bytes, numbered from the `base` given
    /// to `init` (after the model's).
    let files: [SourceFile]
    let fingerprints: [SourceFingerprint]
    /// tp-major, then pp, then dp.
    let optimizerFiles: [ZeroOptimizerFile]
    let grouping: OptimizerGrouping
    /// The state of one parameter, as every parameter of every file holds
    /// it: keys in order, each a tensor to reshard (nil) or a constant.
    let stateEntries: [(key: String, constant: ZeroOptimizerFile.Constant?)]
    let hasMasterWeights: Bool

    /// Reads `tag/optim/` against the model's rank files `model` (keys in
    /// `named_parameters()` order: the trainer writes them so), numbering
    /// the files it serves from `base`. `grouping` is the user's rule, or
    /// nil to infer it.
    init(tag: String, model: NxDRankFiles, base: Int, grouping given: OptimizerGrouping?) throws(ShardFSError) {
        let names = try ZeroOptimizerTag.fileNames(tag: tag, tpSize: model.tpSize, ppSize: model.ppSize)
        dpSize = names.map(\.dp).max()! + 1
        let kinds = names.map { NxDRankFiles.storage(tag: tag, path: $0.path) }
        if let omitted = kinds.firstIndex(of: .xserOmitted) {
            throw ShardFSError.badSource(file: names[omitted].path, reason: "has an .info.pt but its .tensors/ folder holds no tensor file: the trainer always writes the optimizer's tensors")
        }
        if let plain = kinds.firstIndex(of: .plain), let xser = kinds.firstIndex(of: .xser) {
            throw ShardFSError.badSource(file: names[plain].path, reason: "is a plain file but \(names[xser].path) is xser: the trainer saves a tag all one way")
        }
        xser = kinds.first == .xser
        if xser != model.xser {
            throw ShardFSError.badSource(
                file: names[0].path, reason: "is \(xser ? "xser" : "a plain file") but the model's rank files are \(model.xser ? "xser" : "plain"): the trainer saves a tag all one way")
        }
        let isXser = xser, dp = dpSize
        var parsed = try WorkerPool.map(items: names.count, workers: WorkerPool.cores) { (item: Int) throws(ShardFSError) -> Parsed in
            var containment = try SourceContainment(directory: tag)
            return try ZeroOptimizerTag.read(tag: tag, name: names[item], xser: isXser, containment: &containment, lean: true)
        }
        // Each parse is let go once renumbered: 1,024 files of a 70B run's
        // state are tens of megabytes, and two copies of them at once more.
        parsed.reverse()
        var files: [SourceFile] = [], fingerprints: [SourceFingerprint] = [], optimizerFiles: [ZeroOptimizerFile] = []
        optimizerFiles.reserveCapacity(parsed.count)
        while var file = parsed.popLast() {
            file.file.renumber(from: base + files.count)
            optimizerFiles.append(file.file)
            files += file.files
            fingerprints += file.fingerprints
        }
        self.files = files
        self.fingerprints = fingerprints
        self.optimizerFiles = optimizerFiles

        let first = optimizerFiles[0]
        try ZeroOptimizerTag.checkSameGroups(optimizerFiles)
        stateEntries = try ZeroOptimizerTag.stateEntries(optimizerFiles)
        hasMasterWeights = first.keys.contains("sharded_master_weights")
        for file in optimizerFiles where file.keys != first.keys {
            throw ShardFSError.badSource(file: file.path, reason: "holds \(file.keys.joined(separator: ", ")) but \(first.path) holds \(first.keys.joined(separator: ", "))")
        }
        grouping = try ZeroOptimizerTag.grouping(given: given, files: optimizerFiles, model: model)
        for file in optimizerFiles { try ZeroOptimizerTag.checkShards(file, dpSize: dp) }
    }

    /// Each state tensor's pieces, by rank: for `key` (a key of
    /// `stateEntries` holding tensors, or nil for the master weights), every
    /// (tp, pp) rank of `model` with each of its parameters as a piece of
    /// `dpSize` shards, tp-major like `model.ranks`.
    func ranks(of key: String?, model: NxDRankFiles) -> [NxDRankFiles.Rank] {
        var ranks: [NxDRankFiles.Rank] = []
        for (rankIndex, rank) in model.ranks.enumerated() {
            let shards = optimizerFiles[rankIndex * dpSize..<(rankIndex + 1) * dpSize]
            let keyOrder = grouping.groups(rank.keys.map(\.key)).flatMap { $0 }
            var pieces: [(key: String, piece: RankPiece)] = []
            for (index, name) in keyOrder.enumerated() {
                let parameter = shards.first!.parameters[index]
                var segments: [RankPiece.Segment] = []
                var dtype = DType.float32
                let rows = parameter.shape[0], chunk = (rows + dpSize - 1) / dpSize
                for (dp, file) in shards.enumerated() {
                    guard let shard = file.shard(key, of: index) else { continue }
                    dtype = shard.tensor.dtype
                    let count = min(chunk, rows - dp * chunk)
                    if count > 0 {
                        segments.append(RankPiece.Segment(first: dp * chunk, count: count, file: shard.file,
                                                          offset: shard.tensor.offset, strides: shard.tensor.strides))
                    }
                }
                pieces.append((name, RankPiece(dtype: dtype, shape: parameter.shape, segments: segments)))
            }
            // In the model file's key order, as the inverse layout reads pieces.
            let position = Dictionary(uniqueKeysWithValues: rank.keys.enumerated().map { ($0.element.key, $0.offset) })
            pieces.sort { position[$0.key]! < position[$1.key]! }
            ranks.append(NxDRankFiles.Rank(tp: rank.tp, pp: rank.pp, path: shards.first!.path,
                                           keys: pieces.map { ($0.key, $0.piece.dtype, $0.piece.shape) }, pieces: pieces))
        }
        return ranks
    }

    // MARK: Reading

    struct Name: Sendable {
        let dp: Int, tp: Int, pp: Int
        let path: String
    }

    /// `optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt` for every (dp, tp, pp),
    /// sorted tp-major, then pp, then dp; xser's `.info.pt` and `.tensors`
    /// beside them. Anything else there is refused: ShardFS cannot tell what
    /// it is, nor map it to another layout.
    static func fileNames(tag: String, tpSize: Int, ppSize: Int) throws(ShardFSError) -> [Name] {
        let directory = tag + "/optim"
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: directory).sorted() } catch {
            throw ShardFSError.badSource(file: "optim/", reason: "cannot list it: \(error.localizedDescription)")
        }
        var names: [Name] = []
        var seen: Set<String> = []
        for entry in entries {
            guard let (dp, tp, pp) = NxDFileName.ranks(of: entry) else { continue }
            guard tp < tpSize, pp < ppSize else {
                throw ShardFSError.badSource(
                    file: "optim/" + entry, reason: "is for tp rank \(tp), pp rank \(pp), but the model's rank files are tp 0..\(tpSize - 1), pp 0..\(ppSize - 1)")
            }
            names.append(Name(dp: dp, tp: tp, pp: pp, path: "optim/" + entry))
            seen.insert(entry)
        }
        for entry in entries where !seen.contains(entry) {
            let base = entry.hasSuffix(".info.pt") ? String(entry.dropLast(".info.pt".count))
                : entry.hasSuffix(".tensors") ? String(entry.dropLast(".tensors".count)) : nil
            if let base, seen.contains(base) { continue }
            throw ShardFSError.badSource(
                file: "optim/" + entry,
                reason: "is not a ZeRO-1 optimizer file (dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt, with .info.pt and .tensors/ in xser); ShardFS cannot map it to another layout (--weights-only leaves optim/ out)")
        }
        guard !names.isEmpty else {
            throw ShardFSError.badSource(file: "optim/", reason: "holds no optimizer files (--weights-only leaves optim/ out)")
        }
        let dpSize = names.map(\.dp).max()! + 1
        let present = Set(names.map { "\($0.dp) \($0.tp) \($0.pp)" })
        var sorted: [Name] = []
        for tp in 0..<tpSize {
            for pp in 0..<ppSize {
                for dp in 0..<dpSize {
                    let name = "optim/" + NxDFileName.rankFile(dp: dp, tp: tp, pp: pp)
                    guard present.contains("\(dp) \(tp) \(pp)") else {
                        throw ShardFSError.badSource(
                            file: name, reason: "missing: optim/ holds dp ranks 0..\(dpSize - 1) and the model tp 0..\(tpSize - 1), pp 0..\(ppSize - 1), so every triple needs a file")
                    }
                    sorted.append(names.first { $0.dp == dp && $0.tp == tp && $0.pp == pp }!)
                }
            }
        }
        return sorted
    }

    /// One file read, its shards numbered within `files`.
    struct Parsed: Sendable {
        var file: ZeroOptimizerFile
        let files: [SourceFile]
        let fingerprints: [SourceFingerprint]
    }

    /// `lean` keeps of each shard what resharding needs: its key and record
    /// names dropped, its shape and strides one array per distinct value. A
    /// 70B run's state is 250,000 shards, each four small allocations
    /// otherwise; verify, which names records in its findings, reads one
    /// file at a time and keeps them.
    static func read(tag: String, name: Name, xser: Bool, containment: inout SourceContainment,
                     lean: Bool = false) throws(ShardFSError) -> Parsed {
        var files: [SourceFile] = [], fingerprints: [SourceFingerprint] = []
        var readers: [HeadAndTail] = []
        var arrays: [[Int]: [Int]] = [:]
        func shard(_ index: Int, _ t: LocatedTensor) -> ZeroOptimizerFile.Shard {
            guard lean else { return ZeroOptimizerFile.Shard(file: index, tensor: t) }
            func interned(_ values: [Int]) -> [Int] {
                if let kept = arrays[values] { return kept }
                arrays[values] = values
                return values
            }
            let record = ZipRecord(name: "", dataOffset: t.storage.dataOffset, size: t.storage.size, crc32: t.storage.crc32,
                                   localHeaderOffset: t.storage.localHeaderOffset)
            return ZeroOptimizerFile.Shard(file: index, tensor: LocatedTensor(
                key: "", dtype: t.dtype, shape: interned(t.shape), strides: interned(t.strides), offset: t.offset, storage: record))
        }
        func scalar(_ shard: ZeroOptimizerFile.Shard) throws(ShardFSError) -> [UInt8] {
            try readers[shard.file].read(shard.tensor.offset, shard.tensor.dtype.size)
        }
        if !xser {
            let (index, file) = try NxDRankFiles.open(tag: tag, path: name.path, files: &files, containment: &containment)
            let bytes = try HeadAndTail(file)
            readers.append(bytes)
            fingerprints.append(try SourceFingerprint(file, bytes: bytes))
            var archive = try TorchSaveArchive(file: name.path, fileSize: file.size, read: bytes.read)
            let parsed = try ZeroOptimizerFile(
                dp: name.dp, tp: name.tp, pp: name.pp, path: name.path, root: archive.root,
                tensor: { (value, what) throws(ShardFSError) in
                    guard case .tensor(let t) = value else { return nil }
                    return shard(index, try archive.locate(t, key: what, name: what))
                }, scalar: scalar)
            return Parsed(file: parsed, files: files, fingerprints: fingerprints)
        }
        let root = try NxDRankFiles.read(tag: tag, path: name.path, containment: &containment) { (file, size, read) throws(ShardFSError) in
            try TorchSaveArchive(file: file, fileSize: size, read: read).root
        }
        let infoPath = RankFile.xserInfoPath(name.path)
        let info = try NxDRankFiles.read(tag: tag, path: infoPath, containment: &containment) { (file, size, read) throws(ShardFSError) in
            try TorchSaveReader.tensorInfo(file: file, fileSize: size, read: read)
        }
        var local = containment
        let parsed = try ZeroOptimizerFile(
            dp: name.dp, tp: name.tp, pp: name.pp, path: name.path, root: root,
            tensor: { (value, what) throws(ShardFSError) in
                guard case .tensorReference(let tid?) = value else { return nil }
                let tensorPath = RankFile.xserTensorPath(name.path, tid: tid)
                guard let described = info[tid] else {
                    throw ShardFSError.badSource(file: infoPath, reason: "has no entry for tensor \(tid) (\(what))")
                }
                let (index, file) = try NxDRankFiles.open(tag: tag, name: SourceName(xserTensor: tid, of: name.path), files: &files, containment: &local,
                                                          missing: "missing: \(name.path) names tensor \(tid) (\(what))")
                let bytes = try HeadAndTail(file)
                readers.append(bytes)
                fingerprints.append(try SourceFingerprint(file, bytes: bytes))
                let tensor = try TorchSaveReader.singleTensor(file: tensorPath, fileSize: file.size, read: bytes.read)
                guard described.dtype == tensor.dtype, described.shape == tensor.shape else {
                    throw ShardFSError.badSource(
                        file: tensorPath, reason: "holds \(tensor.dtype) \(tensor.shape) but \(infoPath) says \(described.dtype) \(described.shape) for \(what)")
                }
                return shard(index, tensor)
            }, scalar: scalar)
        return Parsed(file: parsed, files: files, fingerprints: fingerprints)
    }

    // MARK: Checks across files

    /// Every file's param groups hold the same hyper-parameters (the
    /// scheduler sets them alike on every rank); the ranks of one (tp, pp)
    /// the same indices.
    static func checkSameGroups(_ files: [ZeroOptimizerFile]) throws(ShardFSError) {
        let first = files[0]
        for file in files {
            guard file.groups.count == first.groups.count else {
                throw ShardFSError.badSource(file: file.path, reason: "has \(file.groups.count) param groups but \(first.path) has \(first.groups.count)")
            }
            for (number, (mine, theirs)) in zip(file.groups, first.groups).enumerated()
            where mine.settings != theirs.settings {
                let differing = zip(mine.settings.settings, theirs.settings.settings).first { $0.0 != $0.1 }.map { ZeroOptimizerFile.describe($0.0.key) } ?? "their keys"
                throw ShardFSError.badSource(
                    file: file.path, reason: "param_groups[\(number)] differs from \(first.path)'s in \(differing): ranks of one run share their hyper-parameters")
            }
        }
        for file in files where file.dp > 0 {
            let reference = files.first { $0.tp == file.tp && $0.pp == file.pp && $0.dp == 0 }!
            guard file.groups.map(\.params) == reference.groups.map(\.params) else {
                throw ShardFSError.badSource(file: file.path, reason: "numbers its parameters unlike \(reference.path), the same tp and pp rank")
            }
        }
    }

    /// The keys of a parameter's state: the same for every parameter of every
    /// file, each a tensor everywhere or the same constant everywhere (the
    /// step: one run, one step count).
    static func stateEntries(_ files: [ZeroOptimizerFile]) throws(ShardFSError) -> [(key: String, constant: ZeroOptimizerFile.Constant?)] {
        guard let model = files.lazy.flatMap(\.parameters).first(where: { !$0.state.isEmpty }) else { return [] }
        let entries = model.state.map { entry -> (key: String, constant: ZeroOptimizerFile.Constant?) in
            if case .constant(let c) = entry.entry { return (entry.key, c) }
            return (entry.key, nil)
        }
        for file in files {
            for (index, parameter) in file.parameters.enumerated() {
                let mine = parameter.state.map { entry -> (key: String, constant: ZeroOptimizerFile.Constant?) in
                    if case .constant(let c) = entry.entry { return (entry.key, c) }
                    return (entry.key, nil)
                }
                guard mine.map(\.key) == entries.map(\.key) else {
                    throw ShardFSError.badSource(
                        file: file.path, reason: "base_state[\(index)] holds \(mine.map(\.key).joined(separator: ", ")) where other parameters hold \(entries.map(\.key).joined(separator: ", ")) (a parameter never stepped?): ShardFS reshards a state every parameter has")
                }
                for (a, b) in zip(mine, entries) where a.constant != b.constant {
                    throw ShardFSError.badSource(
                        file: file.path, reason: "base_state[\(index)]['\(a.key)'] differs from other parameters' (\(describe(a.constant)) vs \(describe(b.constant))): ShardFS carries a value all parameters share")
                }
            }
        }
        return entries
    }

    static func describe(_ constant: ZeroOptimizerFile.Constant?) -> String {
        switch constant {
        case nil: return "a tensor"
        case .plain(let v): return ZeroOptimizerFile.describe(v)
        case .scalarTensor(let dtype, _): return "a 0-d \(dtype.rawValue) tensor"
        }
    }

    /// The grouping rule: the user's, checked, or the one rule among
    /// NxD's examples' and a single group that explains every file.
    static func grouping(given: OptimizerGrouping?, files: [ZeroOptimizerFile], model: NxDRankFiles) throws(ShardFSError) -> OptimizerGrouping {
        let candidates = given.map { [$0] } ?? [OptimizerGrouping.examples, .single]
        var failures: [String] = []
        for candidate in candidates {
            if let failure = try explains(candidate, files: files, model: model) {
                failures.append(failure)
            } else {
                return candidate
            }
        }
        if let given {
            throw ShardFSError.badLayout(flag: "--optimizer-groups", reason: "\(given.flag) (\(given)) does not match the files: \(failures[0])")
        }
        throw ShardFSError.badSource(
            file: "optim/", reason: "no grouping rule explains its param groups: \(failures.joined(separator: "; ")). Say the training script's rule with --optimizer-groups (the no-decay name parts, e.g. bias,norm; or all)")
    }

    /// Why `grouping` does not explain the files (nil: it does). Also
    /// refuses model files whose keys are not in `named_parameters()` order,
    /// which the optimizer's indices follow.
    static func explains(_ grouping: OptimizerGrouping, files: [ZeroOptimizerFile], model: NxDRankFiles) throws(ShardFSError) -> String? {
        for rank in model.ranks {
            let keys = rank.keys.map(\.key)
            switch LlamaParameterOrder.sorted(keys) {
            case .failure(let unknown):
                throw ShardFSError.badSource(file: rank.path, reason: "holds \(unknown.key), which NxD's Llama does not: ShardFS cannot tell where it sits among the optimizer's parameters")
            case .success(let sorted) where sorted != keys:
                let at = zip(sorted, keys).first { $0.0 != $0.1 }!
                throw ShardFSError.badSource(
                    file: rank.path, reason: "holds \(at.1) where NxD's Llama has \(at.0) in named_parameters() order, which the optimizer's indices follow (a file written by the converter, not the trainer?)")
            default: break
            }
            let file = files.first { $0.tp == rank.tp && $0.pp == rank.pp }!
            let groups = grouping.groups(keys)
            guard groups.map(\.count) == file.groups.map(\.params.count) else {
                return "\(file.path) has param groups of \(file.groups.map { String($0.params.count) }.joined(separator: " and ")) parameters, where \(grouping) makes \(groups.map { String($0.count) }.joined(separator: " and ")) of \(rank.path)'s keys"
            }
            let shapes = Dictionary(uniqueKeysWithValues: rank.keys.map { ($0.key, $0.shape) })
            for (index, key) in groups.flatMap({ $0 }).enumerated() where file.parameters[index].shape != shapes[key]! {
                return "\(file.path)'s parameter \(index) has shape \(file.parameters[index].shape), where \(grouping) puts \(key) of shape \(shapes[key]!)"
            }
        }
        return nil
    }

    /// Each shard holds `ceil(d0 / dpSize)` rows (ZeRO-1 pads dim 0 to a
    /// multiple of the DP size), the rest of the parameter's shape, one
    /// dtype per kind.
    static func checkShards(_ file: ZeroOptimizerFile, dpSize: Int) throws(ShardFSError) {
        for (index, parameter) in file.parameters.enumerated() {
            let rows = parameter.shape[0]
            let expected = [(rows + dpSize - 1) / dpSize] + parameter.shape.dropFirst()
            // Names are spelled only for a refusal: a 1,024-file tag has
            // hundreds of thousands of shards.
            func refuse(_ what: String, _ shard: ZeroOptimizerFile.Shard) -> ShardFSError {
                .badSource(file: file.path, reason: "\(what) has shape \(shard.tensor.shape), but a ZeRO-1 shard of a \(parameter.shape) parameter over \(dpSize) data-parallel ranks is \(expected)")
            }
            for entry in parameter.state {
                if case .shard(let shard) = entry.entry, shard.tensor.shape != expected { throw refuse("base_state[\(index)]['\(entry.key)']", shard) }
            }
            if let master = parameter.master, master.tensor.shape != expected { throw refuse("sharded_master_weights[\(index)]", master) }
        }
    }
}

extension ZeroOptimizerFile {
    /// Moves its shards' file indexes up by `base`, in place: a 70B run's
    /// 100,000 parameters copied to renumber them took 40 MB at once.
    mutating func renumber(from base: Int) {
        func moved(_ shard: Shard) -> Shard { Shard(file: shard.file + base, tensor: shard.tensor) }
        for p in parameters.indices {
            for e in parameters[p].state.indices {
                if case .shard(let shard) = parameters[p].state[e].entry { parameters[p].state[e].entry = .shard(moved(shard)) }
            }
            if let master = parameters[p].master { parameters[p].master = moved(master) }
        }
    }
}
