/// An optimizer file of the tag (plain, or an xser group: `P`, `P.info.pt`,
/// `P.tensors/`) against the one the layout plans over the source's
/// training state: its keys, param groups, `shape_info`, each parameter's
/// state keys and carried values (the step), then every shard element by
/// element, its padding included.
struct OptimizerFileCheck {
    let context: CheckContext
    let file: OptimizerFile
    let state: TrainingState

    /// The shards' bytes, for progress.
    static func plannedBytes(_ file: OptimizerFile) -> Int {
        file.parameters.reduce(0) { sum, p in
            sum + (p.state.compactMap { $0 } + [p.master].compactMap { $0 }).reduce(0) { $0 + $1.elementCount * $1.dtype.size }
        }
    }

    func run() -> FileVerdict {
        context.verdict(file.path) { () throws(ShardFSError) in
            FileVerdict(path: file.path, problems: try problems())
        }
    }

    private func problems() throws(ShardFSError) -> [VerifyProblem] {
        var containment = try SourceContainment(directory: context.tag)
        let parsed = try ZeroOptimizerTag.read(
            tag: context.tag, name: .init(dp: file.dpRank, tp: file.tpRank, pp: file.ppRank, path: file.path),
            xser: context.layout.format == .xser, containment: &containment)
        let found = parsed.file, path = file.path
        var problems: [VerifyProblem] = []
        if found.keys != state.keys {
            problems.append(VerifyProblem(.keyOrder, file: path, "holds \(found.keys.joined(separator: ", ")), the layout wants \(state.keys.joined(separator: ", "))"))
        }
        if found.groups.map(\.settings) != state.groups {
            problems.append(VerifyProblem(.wrongValues, file: path, key: "param_groups", "the param groups' hyper-parameters differ from the source's"))
        }
        if found.groups.map(\.params.count) != file.groupSizes {
            problems.append(VerifyProblem(
                .wrongShape, file: path, key: "param_groups",
                "param groups of \(found.groups.map { String($0.params.count) }.joined(separator: " and ")) parameters, the layout wants \(file.groupSizes.map(String.init).joined(separator: " and "))"))
        }
        guard found.parameters.count == file.parameters.count else {
            problems.append(VerifyProblem(.wrongShape, file: path, "\(found.parameters.count) parameters, the layout wants \(file.parameters.count)"))
            return problems
        }
        for (index, (want, got)) in zip(file.parameters, found.parameters).enumerated() {
            let name = "parameter \(index) (\(want.key))"
            guard got.shape == want.shape else {
                problems.append(VerifyProblem(.wrongShape, file: path, key: want.key, "shape_info of \(name) is \(got.shape), the layout wants \(want.shape)"))
                continue
            }
            let wantedKeys = state.stateEntries.map(\.key)
            guard got.state.map(\.key) == wantedKeys else {
                problems.append(VerifyProblem(.keyOrder, file: path, key: want.key,
                                              "base_state of \(name) holds \(got.state.map(\.key).joined(separator: ", ")), the layout wants \(wantedKeys.joined(separator: ", "))"))
                continue
            }
            for ((entry, shard), (key, value)) in zip(zip(state.stateEntries, want.state), got.state) {
                switch (entry.constant, value) {
                case let (constant?, .constant(foundConstant)) where constant == foundConstant:
                    continue
                case (nil, .shard(let foundShard)):
                    guard let shard else { continue }
                    problems += try compare(shard, foundShard, what: "base_state[\(index)]['\(key)'] (\(want.key))", parsed: parsed)
                default:
                    problems.append(VerifyProblem(.wrongValues, file: path, key: want.key, "base_state[\(index)]['\(key)'] (\(want.key)) differs from the source's"))
                }
            }
            switch (want.master, got.master) {
            case let (shard?, foundShard?):
                problems += try compare(shard, foundShard, what: "sharded_master_weights[\(index)] (\(want.key))", parsed: parsed)
            case (nil, nil):
                break
            default:
                problems.append(VerifyProblem(.keyOrder, file: path, key: want.key, "\(name) \(want.master == nil ? "has" : "lacks") a master weight"))
            }
        }
        return problems
    }

    private func compare(_ shard: PlannedShard, _ found: ZeroOptimizerFile.Shard, what: String,
                         parsed: ZeroOptimizerTag.Parsed) throws(ShardFSError) -> [VerifyProblem] {
        let reader = ExtentReader(sources: [parsed.files[found.file]], scratchBytes: 4096)
        let expected = TensorCheck.Expected(key: what, dtype: shard.dtype, shape: shard.shape, storage: shard.storage, planned: nil)
        let located = found.tensor
        let path = context.layout.format == .xser ? parsed.files[found.file].name : file.path
        return try TensorCheck(context: context, tpRank: file.tpRank).check(expected, against: located, file: path, reader: reader).problems
    }
}
