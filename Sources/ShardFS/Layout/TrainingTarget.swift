/// What a training state's target files hold beyond the plain cut of the
/// weights: the rules the planner's training-state branch applies
/// (`LayoutPlanner.plan(checkpoint:options:)`), each in one place.
extension LayoutPlan {
    /// NxD's bf16 runs keep their norm weights in float32 (docs/formats/dcp.md,
    /// "Read as a source"): in a bfloat16 plan of a DCP folder's training state
    /// (`state.fromDCP`), a norm (`input_layernorm`,
    /// `post_attention_layernorm`, `model.norm`) whose source is float32
    /// stays float32; everything else is the plan's dtype. An NxD tag's
    /// model files already say how its run kept them, and `--dtype` is
    /// applied to them as it says (tests/compat/test_optimizer.py).
    func keepingNormsInFloat32(for state: TrainingState) -> LayoutPlan {
        guard state.fromDCP, dtype == .bfloat16 else { return self }
        func isNorm(_ key: String) -> Bool {
            key == "model.norm.weight" || key.hasSuffix(".input_layernorm.weight") || key.hasSuffix(".post_attention_layernorm.weight")
        }
        let kept = files.map { file in
            RankFile(tpRank: file.tpRank, ppRank: file.ppRank, tensors: file.tensors.map { t in
                guard isNorm(t.key), t.blocks.allSatisfy({ $0.tensor.dtype == .float32 }) else { return t }
                return PlannedTensor(key: t.key, dtype: .float32, shape: t.shape, blocks: t.blocks)
            })
        }
        var plan = LayoutPlan(options: options, dtype: dtype, files: kept, layersOfPipelineRank: layersOfPipelineRank, warnings: warnings)
        plan.huggingFaceTensors = huggingFaceTensors
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
