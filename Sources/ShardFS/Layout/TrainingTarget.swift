/// What a target's files hold beyond the plain cut of the weights (each
/// tensor's dtype as its source keeps it; a training state's DP size): the
/// rules `LayoutPlanner.plan(checkpoint:options:)` applies, each in one place.
extension LayoutPlan {
    /// Each model tensor's dtype in the target, one rule for every source
    /// (applied last by `LayoutPlanner.plan(checkpoint:options:)`):
    /// - an NxD tag (`Checkpoint.modelDTypes`), no `--dtype`: the dtype its
    ///   model files hold the tensor in, per tensor (NxD's bf16 runs keep
    ///   `input_layernorm`, `post_attention_layernorm` and `model.norm` in
    ///   float32), also when the model comes from its master weights;
    ///   `--dtype` narrows or widens every tensor (tests/compat/test_optimizer.py);
    /// - a DCP folder's training state (`state.fromDCP`) in a bfloat16
    ///   plan: a float32 norm stays float32, as such a run would hold it
    ///   (docs/formats/dcp.md, "Read as a source");
    /// - otherwise the plan's one dtype (a Hugging Face model: config.json's
    ///   `torch_dtype` or `--dtype`).
    /// A target tensor joining source tensors of different dtypes (a fused
    /// QKV of mixed q, k, v) has no such dtype: refused, asking for `--dtype`.
    func typedAsTheSource(_ checkpoint: Checkpoint, requested: DType?) throws(ShardFSError) -> LayoutPlan {
        let held = requested == nil ? checkpoint.modelDTypes : nil
        let dcpNorms = checkpoint.trainingState?.fromDCP == true && dtype == .bfloat16
        guard held != nil || dcpNorms else { return self }
        func isNorm(_ key: String) -> Bool {
            key == "model.norm.weight" || key.hasSuffix(".input_layernorm.weight") || key.hasSuffix(".post_attention_layernorm.weight")
        }
        func typed(_ t: PlannedTensor) throws(ShardFSError) -> PlannedTensor {
            var kept = t.dtype
            if dcpNorms {
                if isNorm(t.key), t.blocks.allSatisfy({ $0.tensor.dtype == .float32 }) { kept = .float32 }
            } else if let held {
                let dtypes = Set(t.blocks.compactMap { held[$0.tensor.name] })
                guard dtypes.count <= 1 else {
                    throw ShardFSError.badLayout(
                        flag: "--dtype", reason: "missing: \(t.key) joins tensors the source holds as \(dtypes.map(\.rawValue).sorted().joined(separator: " and ")); say which dtype to write")
                }
                kept = dtypes.first ?? t.dtype
            }
            return kept == t.dtype ? t : PlannedTensor(key: t.key, dtype: kept, shape: t.shape, blocks: t.blocks)
        }
        var files: [RankFile] = []
        files.reserveCapacity(self.files.count)
        for file in self.files {
            var tensors: [PlannedTensor] = []
            tensors.reserveCapacity(file.tensors.count)
            for t in file.tensors { tensors.append(try typed(t)) }
            files.append(RankFile(tpRank: file.tpRank, ppRank: file.ppRank, tensors: tensors))
        }
        var huggingFace: [PlannedTensor] = []
        for t in huggingFaceTensors { huggingFace.append(try typed(t)) }
        var plan = LayoutPlan(options: options, dtype: dtype, files: files, layersOfPipelineRank: layersOfPipelineRank, warnings: warnings)
        plan.huggingFaceTensors = huggingFace
        plan.configBytes = configBytes
        plan.optimizer = optimizer
        plan.dcp = dcp
        return plan
    }
}

extension TrainingState {
    /// The data-parallel size of the target's optimizer files: `--dp-size`,
    /// else the source's own; a DCP folder's state is whole and has none to
    /// give, so there `--dp-size` is required.
    func targetDPSize(_ given: Int?) throws(ShardFSError) -> Int {
        if let given { return given }
        guard !fromDCP else {
            throw ShardFSError.badLayout(
                flag: "--dp-size", reason: "missing: a DCP checkpoint's optimizer state is whole, and the NxD run's data-parallel size (its ZeRO-1 shards) is yours to say")
        }
        return dpSize
    }
}
