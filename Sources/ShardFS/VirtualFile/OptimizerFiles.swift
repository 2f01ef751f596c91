/// The files an optimizer plan becomes, in the plan's format: the one place
/// that turns optimizer files into `(path, VirtualFile)` pairs (beside
/// `PlanFiles.swift` for the rank files), which convert and mount consume
/// unchanged.
extension OptimizerPlan {
    /// The optimizer files of rank files (tp, pp) in `ranks`, in `layout`'s
    /// format (pt or xser).
    func virtualFiles(ranks: Set<[Int]>, layout: LayoutOptions) -> [(path: String, file: VirtualFile)] {
        files.filter { ranks.contains([$0.tpRank, $0.ppRank]) }.flatMap { file in
            layout.format == .xser ? file.xserFiles(state: state, layout: layout) : [(file.path, file.virtualFile(state: state, layout: layout))]
        }
    }

    /// The files carried from the source as they are. `done` comes last, as
    /// NxD writes it: a tag is complete once it exists.
    var carriedFiles: [(path: String, file: VirtualFile)] {
        let sorted = state.carried.filter { $0.path != "done" } + state.carried.filter { $0.path == "done" }
        return sorted.map { ($0.path, VirtualFile(extents: [.literal($0.bytes)])) }
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
    /// The pickle's description, and the storage of each tensor by the id it carries.
    func pickle(state: TrainingState) -> (pickle: OptimizerStatePickle, storages: [[Extent]]) {
        var storages: [[Extent]] = []
        func tensor(_ description: TensorDescription, _ storage: [Extent]) -> OptimizerStatePickle.Value {
            storages.append(storage)
            return .tensor(description, id: storages.count - 1)
        }
        var groups: [OptimizerStatePickle.Group] = []
        var next = 0
        for (settings, size) in zip(state.groups, groupSizes) {
            groups.append(OptimizerStatePickle.Group(settings: settings.settings, paramsPosition: settings.paramsPosition,
                                                     params: Array(next..<next + size)))
            next += size
        }
        let parameters = self.parameters.map { parameter in
            var entries: [(key: String, value: OptimizerStatePickle.Value)] = []
            for (entry, shard) in zip(state.stateEntries, parameter.state) {
                switch (entry.constant, shard) {
                case let (.plain(value)?, _):
                    entries.append((entry.key, .plain(value)))
                case let (.scalarTensor(dtype, bytes)?, _):
                    entries.append((entry.key, tensor(TensorDescription(dtype: dtype, shape: []), [.literal(bytes)])))
                case let (nil, shard?):
                    entries.append((entry.key, tensor(shard.torchDescription, shard.storage)))
                case (nil, nil):
                    break  // not planned: cannot happen, every tensor entry is replanned
                }
            }
            let master = parameter.master.map { tensor($0.torchDescription, $0.storage) }
            return OptimizerStatePickle.Parameter(shape: parameter.shape, state: entries, master: master)
        }
        return (OptimizerStatePickle(keys: state.keys, groups: groups, parameters: parameters), storages)
    }

    /// This file as `torch.save` writes the optimizer's state dict.
    func virtualFile(state: TrainingState, layout: LayoutOptions) -> VirtualFile {
        let (description, storages) = pickle(state: state)
        var order: [Int] = []
        let bytes = description.pickle { p, n, tensor, id in
            p.tensor(tensor, storageKey: String(n))
            order.append(id)
        }
        let fileName = OptimizerFile.fileName(dp: dpRank, tp: tpRank, pp: ppRank)
        return TorchSaveFile.file(fileName: fileName, pickle: bytes, storages: order.map { storages[$0] },
                                  serializationID: TorchSaveFile.serializationID(seed: layout.summary + " " + path))
    }

    /// This file as NxD's trainer saves it with xser (xser.md): the state
    /// dict with a `TensorReference` for each tensor at `path`, their dtypes
    /// and shapes at `path.info.pt`, each tensor alone in `path.tensors/`.
    func xserFiles(state: TrainingState, layout: LayoutOptions) -> [(path: String, file: VirtualFile)] {
        func file(_ path: String, pickle: [UInt8], storages: [[Extent]]) -> (path: String, file: VirtualFile) {
            (path, TorchSaveFile.file(fileName: path, pickle: pickle, storages: storages,
                                      serializationID: TorchSaveFile.serializationID(seed: layout.summary + " " + path)))
        }
        let (description, storages) = pickle(state: state)
        var tensors: [(description: TensorDescription, id: Int)] = []
        let references = description.pickle { p, n, tensor, id in
            p.tensorReference(tid: n)
            tensors.append((tensor, id))
        }
        var result = [
            file(path, pickle: references, storages: []),
            file(RankFile.xserInfoPath(path), pickle: PickleWriter.tensorInfo(tensors.map(\.description)), storages: []),
        ]
        for (tid, tensor) in tensors.enumerated() {
            result.append(file(RankFile.xserTensorPath(path, tid: tid), pickle: PickleWriter.singleTensor(tensor.description),
                               storages: [storages[tensor.id]]))
        }
        return result
    }
}
