/// A value of a parameter's optimizer state that is carried as it is, not
/// resharded: an int or float `step`, or a 0-d tensor one (its element's
/// bytes).
public enum OptimizerConstant: Equatable, Sendable {
    case plain(PickleValue)
    case scalarTensor(DType, [UInt8])
}

/// One of an optimizer's `param_groups` without its `params`: the
/// hyper-parameters in file order, and where `params` sat among them.
public struct OptimizerGroupSettings: Equatable, Sendable {
    public let settings: [PickleValue.Item]
    public let paramsPosition: Int
}

/// What a training tag holds beside its weights, read as a source: the
/// ZeRO-1 optimizer's state with each state tensor assembled under the
/// Hugging Face name of its parameter (as the weights are), and the files
/// that do not depend on the layout, carried as they are (docs/formats/zero1.md).
public struct TrainingState: Sendable {
    /// The source's data-parallel size.
    public let dpSize: Int
    /// The dtype the run trained its parameters in (its model files',
    /// also when they hold no data: their `.info.pt`), nil when they mix.
    /// A resumed run's model files keep it, whatever config.json's
    /// `torch_dtype` (the Hugging Face checkpoint's) says.
    public let modelDType: DType?
    /// The optimizer files were xser.
    public let xser: Bool
    public let grouping: OptimizerGrouping
    /// The optimizer file's top-level keys, in order.
    public let keys: [String]
    public let groups: [OptimizerGroupSettings]
    /// A parameter's state: keys in order, each resharded (nil) or carried.
    public let stateEntries: [(key: String, constant: OptimizerConstant?)]
    /// For each key of `stateEntries` holding tensors, the Hugging Face tensors.
    public let stateTensors: [String: [String: SourceTensor]]
    /// `sharded_master_weights`, whole, by Hugging Face name.
    public let masterWeights: [String: SourceTensor]?
    /// Files the layout does not change (`scheduler.pt`, `user_content.pt`,
    /// the `checkpoint` and `done` markers), by path in the tag, read.
    public let carried: [(path: String, bytes: [UInt8])]
    /// What the user should know (entries of the tag not carried).
    public let notes: [String]
    /// The source's parameter indices by (tp, pp) rank: `keys[i]` is the
    /// parameter the optimizer's index i stands for, as inferred.
    public let sourceIndexes: [(tp: Int, pp: Int, keys: [String])]
    /// Read from a DCP folder (`Source/DCP/`), not an NxD tag: the state is
    /// whole (`dpSize` 1) and says nothing of the NxD run to resume, so the
    /// target's DP size must be given; `masterWeights` (the fp32 model) are
    /// written whatever the target's dtype (`DCPOptimizer`; docs/formats/dcp.md,
    /// "Read as a source").
    public var fromDCP = false
}
