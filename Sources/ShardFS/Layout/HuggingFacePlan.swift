/// `--format hf`: the plan of a Hugging Face checkpoint, every tensor whole
/// under its own name. Over an NxD source each tensor is assembled from the
/// rank files' pieces (its tiles); over a Hugging Face source this rewrites
/// it (with `--dtype`, converted; with `--max-shard-size`, resharded).
extension LayoutPlanner {
    static func huggingFacePlan(checkpoint: Checkpoint, weights: LlamaWeights, options o: LayoutOptions) throws(ShardFSError) -> LayoutPlan {
        let c = checkpoint.config
        guard o.maxShardSize >= 1 else {
            throw ShardFSError.badLayout(flag: "--max-shard-size", reason: "must be at least 1 byte")
        }
        var tensors: [PlannedTensor] = []
        for e in try LlamaWeights.expectedTensors(c) {
            // Present: LlamaWeights has checked every expected tensor.
            let tensor = checkpoint.tensors[e.name]!
            tensors.append(PlannedTensor(key: e.name, dtype: o.dtype ?? tensor.dtype, shape: tensor.shape, blocks: [RowBlock(whole: tensor)]))
        }
        let dtypes = Set(tensors.map(\.dtype))
        var plan = LayoutPlan(options: o, dtype: dtypes.count == 1 ? dtypes.first! : (o.dtype ?? c.dtype ?? .float32), files: [],
                              layersOfPipelineRank: [], warnings: [])
        plan.huggingFaceTensors = tensors
        plan.configBytes = checkpoint.configBytes
        return plan
    }
}
