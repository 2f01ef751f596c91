/// The files an optimizer plan becomes, in the plan's format: the one place
/// that turns optimizer files into `(path, VirtualFile)` pairs (beside
/// `PlanFiles.swift` for the rank files), which convert and mount consume
/// unchanged.
extension OptimizerPlan {
    /// The optimizer files of rank files (tp, pp) in `ranks`, in `layout`'s
    /// format (pt or xser).
    /// A pt file is a recipe (`PlannedFile.recipe`): 1,024 of them, each
    /// the framing of a few hundred records, held at once took 130 MB.
    func virtualFiles(ranks: Set<[Int]>, layout: LayoutOptions) -> PlannedFiles {
        let state = self.state
        var result = PlannedFiles()
        for file in files where ranks.contains([file.tpRank, file.ppRank]) {
            if layout.format == .xser {
                result.append(contentsOf: file.xserFiles(state: state, layout: layout))
            } else {
                result.append(file.path, PlannedFile.recipe { file.virtualFile(state: state, layout: layout) })
            }
        }
        return result
    }

    /// The files carried from the source as they are. `done` comes last, as
    /// NxD writes it: a tag is complete once it exists.
    var carriedFiles: PlannedFiles {
        let sorted = state.carried.filter { $0.path != "done" } + state.carried.filter { $0.path == "done" }
        return PlannedFiles(sorted.map { ($0.path, PlannedFile(VirtualFile(extents: [.literal($0.bytes)]))) })
    }
}

extension PlannedShard {
    var torchDescription: TensorDescription { TensorDescription(dtype: dtype, shape: shape) }

    /// The shard's bytes: its blocks, then the padding's zeros.
    var storage: [Extent] {
        blocks.flatMap { $0.extents(outputDType: dtype) } + (paddingElements > 0 ? [.zeros(paddingElements * dtype.size)] : [])
    }
}

extension OptimizerFile {
    /// Where one tensor of the file's pickle takes its bytes, by name: the
    /// shard of a parameter's state entry or master weight, or a 0-d `step`.
    /// Extents are made from it only when the bytes are wanted.
    enum TensorSource: Sendable {
        case state(parameter: Int, entry: Int)
        case master(parameter: Int)
        case scalar(DType, [UInt8])
    }

    func description(of source: TensorSource) -> TensorDescription {
        switch source {
        case let .state(p, e): return parameters[p].state[e]!.torchDescription
        case let .master(p): return parameters[p].master!.torchDescription
        case let .scalar(dtype, _): return TensorDescription(dtype: dtype, shape: [])
        }
    }

    func storage(of source: TensorSource) -> [Extent] {
        switch source {
        case let .state(p, e): return parameters[p].state[e]!.storage
        case let .master(p): return parameters[p].master!.storage
        case let .scalar(_, bytes): return [.literal(bytes)]
        }
    }

    /// The pickle's description, and the source of each tensor by the id it carries.
    func pickle(state: TrainingState) -> (pickle: OptimizerStatePickle, sources: [TensorSource]) {
        var sources: [TensorSource] = []
        func tensor(_ source: TensorSource) -> OptimizerStatePickle.Value {
            sources.append(source)
            return .tensor(description(of: source), id: sources.count - 1)
        }
        var groups: [OptimizerStatePickle.Group] = []
        var next = 0
        for (settings, size) in zip(state.groups, groupSizes) {
            groups.append(OptimizerStatePickle.Group(settings: settings.settings, paramsPosition: settings.paramsPosition,
                                                     params: Array(next..<next + size)))
            next += size
        }
        let parameters = self.parameters.enumerated().map { index, parameter in
            var entries: [(key: String, value: OptimizerStatePickle.Value)] = []
            for (e, (entry, shard)) in zip(state.stateEntries, parameter.state).enumerated() {
                switch (entry.constant, shard) {
                case let (.plain(value)?, _):
                    entries.append((entry.key, .plain(value)))
                case let (.scalarTensor(dtype, bytes)?, _):
                    entries.append((entry.key, tensor(.scalar(dtype, bytes))))
                case (nil, _?):
                    entries.append((entry.key, tensor(.state(parameter: index, entry: e))))
                case (nil, nil):
                    break  // not planned: cannot happen, every tensor entry is replanned
                }
            }
            let master = parameter.master.map { _ in tensor(.master(parameter: index)) }
            return OptimizerStatePickle.Parameter(shape: parameter.shape, state: entries, master: master)
        }
        return (OptimizerStatePickle(keys: state.keys, groups: groups, parameters: parameters), sources)
    }

    /// This file as `torch.save` writes the optimizer's state dict.
    func virtualFile(state: TrainingState, layout: LayoutOptions) -> VirtualFile {
        let (statePickle, sources) = pickle(state: state)
        var order: [Int] = []
        let bytes = statePickle.pickle { p, n, tensor, id in
            p.tensor(tensor, storageKey: String(n))
            order.append(id)
        }
        let fileName = OptimizerFile.fileName(dp: dpRank, tp: tpRank, pp: ppRank)
        return TorchSaveFile.file(fileName: fileName, pickle: bytes, storages: order.map { storage(of: sources[$0]) },
                                  serializationID: TorchSaveFile.serializationID(seed: layout.summary + " " + path))
    }

    /// This file as NxD's trainer saves it with xser (`XserFiles`): the
    /// state dict with a `TensorReference` for each tensor.
    func xserFiles(state: TrainingState, layout: LayoutOptions) -> PlannedFiles {
        let (statePickle, sources) = pickle(state: state)
        var tensors: [(description: TensorDescription, id: Int)] = []
        let references = statePickle.pickle { p, n, tensor, id in
            p.tensorReference(tid: n)
            tensors.append((tensor, id))
        }
        let order = tensors.map { sources[$0.id] }
        return XserFiles.group(path: path, references: references, descriptions: tensors.map(\.description),
                               seed: layout.summary + " ") { [self] tid in storage(of: order[tid]) }
    }
}
