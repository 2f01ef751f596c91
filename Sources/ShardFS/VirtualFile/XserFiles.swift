/// The one writer of NxD's xser form (docs/formats/xser.md), for rank files
/// and optimizer files alike: at `path` the pickle naming each tensor by a
/// `TensorReference`, `path.info.pt` with every tensor's dtype and shape,
/// and each tensor alone in `path.tensors/tensor_<tid>.pt`, in tid order.
enum XserFiles {
    /// The group of files for `path`. `references` is the pickle at `path`;
    /// tensor `tid` is described by `descriptions[tid]` and holds
    /// `storage(tid)`. The tensor files (300,000 for a 70B run's state) are
    /// recipes, made where they are read. `seed` starts every file's
    /// serialization id (the layout), the file's path ends it, so each file
    /// has its own and the same layout always the same bytes.
    static func group(path: String, references: [UInt8], descriptions: [TensorDescription], seed: String,
                      storage: @escaping @Sendable (Int) -> [Extent]) -> PlannedFiles {
        // The reference dict and the info dict are recipes too: each is a
        // pickle of every tensor of its file, 15 KB for an optimizer file,
        // 45 MB for a 70B run's 1,280 files held at once.
        let infoPath = RankFile.xserInfoPath(path)
        let tensors = RecipeGroup(count: descriptions.count) { tid in
            file(RankFile.xserTensorPath(path, tid: tid), pickle: PickleWriter.singleTensor(descriptions[tid]), storages: [storage(tid)], seed: seed)
        }
        // One entry for the group: the tensor files' paths are spelt when read.
        var group = PlannedFiles()
        group.appendXser(path: path, reference: PlannedFile.recipe { file(path, pickle: references, storages: [], seed: seed) },
                         info: PlannedFile.recipe { file(infoPath, pickle: PickleWriter.tensorInfo(descriptions), storages: [], seed: seed) },
                         tensors: tensors)
        return group
    }

    private static func file(_ path: String, pickle: [UInt8], storages: [[Extent]], seed: String) -> VirtualFile {
        TorchSaveFile.file(fileName: path, pickle: pickle, storages: storages,
                           serializationID: TorchSaveFile.serializationID(seed: seed + path))
    }
}
