/// The files each rank file of a plan becomes, in either format: the one
/// place that turns a plan into `(path, VirtualFile)` pairs, which convert
/// and mount consume unchanged.
extension LayoutPlan {
    /// The files of the rank files `files` (default: all), in the plan's
    /// format (`options.format`), at their relative paths. In xser, each rank
    /// file's group (`p`, `p.info.pt`, `p.tensors/...`) is contiguous, so a
    /// share of rank files (`--part`) keeps its groups whole.
    ///
    /// A training tag's plan adds the optimizer files of those rank files
    /// (every data-parallel rank of each), and, with the first rank file,
    /// the files carried as they are, `done` last.
    public func virtualFiles(_ files: [RankFile]? = nil) -> PlannedFiles {
        let files = files ?? self.files
        switch options.format {
        case .pt, .xser:
            var result = PlannedFiles()
            for file in files {
                if options.format == .pt {
                    result.append(file.path, PlannedFile(file.virtualFile(layout: options)))
                } else {
                    result.append(contentsOf: file.xserFiles(layout: options))
                }
            }
            if let optimizer {
                result.append(contentsOf: optimizer.virtualFiles(ranks: Set(files.map { [$0.tpRank, $0.ppRank] }), layout: options))
                if files.contains(where: { $0.tpRank == 0 && $0.ppRank == 0 }) { result.append(contentsOf: optimizer.carriedFiles) }
            }
            return result
        case .dcp:
            return PlannedFiles(dcp?.virtualFiles() ?? [])
        case .hf:
            let tensors = huggingFaceTensors.map { HFTensor(name: $0.key, dtype: $0.dtype, shape: $0.shape, storage: $0.storage) }
            return PlannedFiles([("config.json", PlannedFile(VirtualFile(extents: [.literal(configBytes)])))]
                + HuggingFaceShards.files(tensors, maxShardSize: options.maxShardSize))
        }
    }
}

extension LayoutPlan {
    /// The files of share `part` (`--part I/N`) of the plan: of rank files
    /// (pt, xser) or of a DCP folder's `.distcp` files; a Hugging Face
    /// checkpoint is written whole. A completion marker (`isCompletionMarker`)
    /// belongs to the whole only: a share cannot know when the others finish.
    public func virtualFiles(part: Part) throws(ShardFSError) -> PlannedFiles {
        guard part != .whole else { return virtualFiles() }
        try LayoutPlan.checkPart(part, format: options.format)
        switch options.format {
        case .hf:
            return PlannedFiles()
        case .dcp:
            return PlannedFiles(dcp?.virtualFiles(part) ?? [])
        case .pt, .xser:
            return virtualFiles(part.select(files)).removing(LayoutPlan.isCompletionMarker)
        }
    }

    /// Refuses `--part` where a format is written whole.
    public static func checkPart(_ part: Part, format: CheckpointFormat) throws(ShardFSError) {
        guard part != .whole, format == .hf else { return }
        throw ShardFSError.badLayout(flag: "--part", reason: "splits files among tasks; a Hugging Face checkpoint (--format hf) is written by one task")
    }

    /// Whether `path` is a file whose presence says the output is complete:
    /// a training tag's `done`, a DCP folder's `.metadata`. Written after
    /// every other file, and only by a run over the whole.
    public static func isCompletionMarker(_ path: String) -> Bool {
        path == "done" || path == DCPPlan.metadataPath
    }
}

extension PlannedTensor {
    var torchDescription: TensorDescription { TensorDescription(dtype: dtype, shape: shape) }

    /// The tensor's bytes: its source blocks, stacked, converted to its dtype.
    var storage: [Extent] { blocks.flatMap { $0.extents(outputDType: dtype) } }
}

extension RankFile {
    /// This rank file as `torch.save(dict)` would write it, over the source.
    public func virtualFile(layout: LayoutOptions) -> VirtualFile {
        let fileName = RankFile.fileName(tp: tpRank, pp: ppRank)
        let pickle = PickleWriter.stateDict(tensors.map { ($0.key, $0.torchDescription) })
        return TorchSaveFile.file(fileName: fileName, pickle: pickle, storages: tensors.map(\.storage),
                                  serializationID: TorchSaveFile.serializationID(seed: layout.summary + " " + fileName))
    }

    /// This rank file as NxD's trainer saves it with xser (`XserFiles`):
    /// each tensor file over the same extents the pt file uses; only
    /// literals (pickles, zip framing) are new.
    public func xserFiles(layout: LayoutOptions) -> PlannedFiles {
        let tensors = self.tensors
        return XserFiles.group(path: path, references: PickleWriter.tensorReferences(keys: tensors.map(\.key)),
                               descriptions: tensors.map(\.torchDescription), seed: layout.summary + " ") { tensors[$0].storage }
    }
}
