/// A ZeRO-1 training state's hyper-parameters as TorchTitan's AdamW (one
/// param group) and LR scheduler hold them (docs/formats/dcp.md,
/// "Optimizer"): what every `optimizer.param_groups.<fqn>.<key>` and
/// `lr_scheduler.<key>` entry of the checkpoint says. TorchTitan keeps one
/// group, and torch's flattened loader reads a group's values from its
/// first parameter only: a difference between NxD's groups that TorchTitan
/// cannot keep is refused (lr, betas, eps) or said (weight decay).
struct TorchTitanOptimizer {
    let step: Int
    /// `step` as the 0-dim float32 tensor AdamW keeps.
    let stepBytes: [UInt8]
    /// The keys of torch's AdamW param group, in its order, and
    /// `initial_lr`, which TorchTitan's scheduler adds.
    let groupValues: [(key: String, value: PickleValue)]
    /// A LambdaLR's `state_dict()` without its lambdas, at the step.
    let schedulerValues: [(key: String, value: PickleValue)]
    /// Where they come from, for `plan`.
    let schedulerOrigin: String
    let notes: [String]

    init(state: TrainingState) throws(ShardFSError) {
        guard let stepEntry = state.stateEntries.first(where: { $0.key == "step" }), let constant = stepEntry.constant else {
            throw ShardFSError.badSource(file: "optim/", reason: "holds no step for its parameters: TorchTitan's AdamW needs one")
        }
        if let other = state.stateEntries.first(where: { !["step", "exp_avg", "exp_avg_sq"].contains($0.key) }) {
            throw ShardFSError.badSource(file: "optim/", reason: "holds '\(other.key)' per parameter, which TorchTitan's AdamW does not keep (it keeps step, exp_avg, exp_avg_sq)")
        }
        guard let value = TorchTitanOptimizer.number(constant), value >= 0, value == value.rounded(), value < 1e15 else {
            throw ShardFSError.badSource(file: "optim/", reason: "its step is not a whole number of steps")
        }
        step = Int(value)
        stepBytes = withUnsafeBytes(of: Float(value).bitPattern.littleEndian) { Array($0) }

        func setting(_ group: Int, _ key: String) -> PickleValue? {
            state.groups[group].settings.first { $0.key == .string(key) }?.value
        }
        func float(_ group: Int, _ key: String) throws(ShardFSError) -> Double {
            switch setting(group, key) {
            case .float(let f)?: return f
            case .int(let i)?: return Double(i)
            default: throw ShardFSError.badSource(file: "optim/", reason: "param_groups[\(group)] has no number '\(key)'")
            }
        }
        guard !state.groups.isEmpty else { throw ShardFSError.badSource(file: "optim/", reason: "has no param_groups") }
        var betas: [Double] = []
        switch setting(0, "betas") {
        case .list(let items)?, .tuple(let items)?:
            for item in items {
                switch item {
                case .float(let f): betas.append(f)
                case .int(let i): betas.append(Double(i))
                default: break
                }
            }
        default: break
        }
        guard betas.count == 2 else { throw ShardFSError.badSource(file: "optim/", reason: "param_groups[0] has no betas (two numbers)") }
        let lr = try float(0, "lr"), eps = try float(0, "eps"), weightDecay = try float(0, "weight_decay")
        // torch's LRScheduler sets a group's initial_lr and its base_lrs
        // entry from one value: the group's, else the scheduler's, else lr.
        let scheduler = state.carried.first { $0.path == "scheduler.pt" }.flatMap { SchedulerState(bytes: $0.bytes, file: $0.path) }
        let initialLR = setting(0, "initial_lr") == nil ? (scheduler?.baseLR ?? lr) : try float(0, "initial_lr")
        if case .bool(false)? = setting(0, "correct_bias") {
            throw ShardFSError.badSource(file: "optim/", reason: "param_groups[0] has correct_bias False; TorchTitan's AdamW always corrects the moments' bias, so the run would not resume the same")
        }
        var notes: [String] = []
        for group in 1..<state.groups.count {
            for key in ["lr", "eps"] where try float(group, key) != (key == "lr" ? lr : eps) {
                throw ShardFSError.badSource(file: "optim/", reason: "param_groups[\(group)] has \(key) \(try float(group, key)), param_groups[0] \(key == "lr" ? lr : eps): TorchTitan keeps one param group, so one value for all")
            }
            if setting(group, "betas").map({ ZeroOptimizerFile.describe($0) }) != setting(0, "betas").map({ ZeroOptimizerFile.describe($0) }) {
                throw ShardFSError.badSource(file: "optim/", reason: "param_groups[\(group)] has other betas than param_groups[0]: TorchTitan keeps one param group")
            }
            let decay = try float(group, "weight_decay")
            if decay != weightDecay {
                notes.append("NxD's param_groups[\(group)] (\(state.grouping): the norms and biases) had weight_decay \(decay); TorchTitan keeps one param group, so every parameter resumes with param_groups[0]'s weight_decay \(weightDecay)")
            }
        }
        notes.append("set checkpoint.exclude_from_loading = [\"dataloader\"] in TorchTitan's config (the folder holds no data loader state: a new run's data order is its own), and checkpoint.initial_load_model_only = false when the folder is given as checkpoint.initial_load_path")
        notes.append("train_state.ntokens_seen is 0: NxD does not count the tokens seen")
        // AdamW's switches: the tag's where its group has them (a bool, or
        // None for foreach/fused), else torch's AdamW defaults.
        func flag(_ key: String, _ fallback: PickleValue) -> PickleValue {
            switch setting(0, key) {
            case .bool(let b)?: return .bool(b)
            case .none? where fallback == .none: return .none
            default: return fallback
            }
        }
        if case .bool(true)? = setting(0, "amsgrad") {
            throw ShardFSError.badSource(file: "optim/", reason: "param_groups[0] has amsgrad True, whose max_exp_avg_sq NxD's ZeRO-1 files do not hold")
        }
        groupValues = [
            ("lr", .float(lr)), ("betas", .tuple(betas.map { .float($0) })), ("eps", .float(eps)),
            ("weight_decay", .float(weightDecay)), ("amsgrad", .bool(false)), ("maximize", flag("maximize", .bool(false))),
            ("foreach", flag("foreach", .none)), ("capturable", flag("capturable", .bool(false))),
            ("differentiable", flag("differentiable", .bool(false))), ("fused", flag("fused", .none)),
            ("decoupled_weight_decay", flag("decoupled_weight_decay", .bool(true))), ("initial_lr", .float(initialLR)),
        ]
        // The tag's own LambdaLR state where it has one (its first group's:
        // TorchTitan's one); else the step's.
        if state.carried.contains(where: { $0.path == "scheduler.pt" }) && scheduler == nil {
            notes.append("scheduler.pt is not a LambdaLR's state: lr_scheduler is made from the step (last_epoch \(step)) and the param group's lr")
        }
        schedulerOrigin = scheduler == nil ? "the step and the param group's lr" : "the tag's scheduler.pt (its first group)"
        let s = scheduler ?? SchedulerState(baseLR: initialLR, lastEpoch: step, stepCount: step + 1, lastLR: lr)
        schedulerValues = [
            ("base_lrs", .list([.float(s.baseLR)])), ("last_epoch", .int(s.lastEpoch)), ("_step_count", .int(s.stepCount)),
            ("_is_initial", .bool(false)), ("_get_lr_called_within_step", .bool(false)), ("_last_lr", .list([.float(s.lastLR)])),
        ]
        self.notes = notes
    }

    /// An int, float or 0-d tensor step as a number.
    static func number(_ constant: OptimizerConstant) -> Double? {
        switch constant {
        case .plain(.int(let i)): return Double(i)
        case .plain(.float(let f)): return f
        case .plain: return nil
        case let .scalarTensor(dtype, bytes):
            guard bytes.count == dtype.size else { return nil }
            var bits: UInt64 = 0
            for (i, b) in bytes.enumerated() { bits |= UInt64(b) << (8 * UInt64(i)) }
            switch dtype {
            case .float32: return Double(Float(bitPattern: UInt32(bits)))
            case .bfloat16: return Double(Float(bitPattern: UInt32(bits) << 16))
            case .float16: return Double(Float16(bitPattern: UInt16(bits)))
            case .float64: return Double(bitPattern: bits)
            }
        }
    }
}
