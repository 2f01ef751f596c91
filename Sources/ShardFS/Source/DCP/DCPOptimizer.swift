/// A TorchTitan checkpoint's AdamW (`optimizer.state.*`,
/// `optimizer.param_groups.*`), LR scheduler and train state, read as what
/// NxD's ZeRO-1 optimizer keeps (docs/formats/zero1.md; docs/formats/dcp.md, "Read as a source"): a
/// `TrainingState` whose state tensors are the parameters' `exp_avg` and
/// `exp_avg_sq` under Hugging Face names (wq's and wk's in Hugging Face's
/// row order, like the weights), `step` a Python int, and param groups
/// `{weight_decay, lr, betas, eps, correct_bias, capturable, params}` by
/// NxD's grouping rule. The state is whole, so the target's DP size is the
/// user's, and the master weights (the fp32 model) are always kept: NxD
/// versions that load the optimizer before the model resume from them.
struct DCPOptimizer {
    /// The keys of AdamW's state per parameter, in the order NxD's AdamW
    /// initialises them (and torch's, and so the folder's).
    static let stateKeys = ["step", "exp_avg", "exp_avg_sq"]
    /// The keys of torch 2.13's AdamW param group, and the scheduler's `initial_lr`.
    static let groupKeys: Set<String> = ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable",
                                         "differentiable", "fused", "decoupled_weight_decay", "initial_lr"]

    struct Parameter {
        /// `exp_avg`, `exp_avg_sq`: the requests of their chunks.
        var tensors: [String: (fqn: String, entry: DCPMetadata.TensorEntry, range: Range<Int>)] = [:]
        var step: (fqn: String, request: Int)?
        var groupValues: [(key: String, fqn: String, request: Int)] = []
    }

    var parameters: [Parameter] = []
    /// Whether the optimizer ever stepped (else NxD's `base_state` is empty).
    let stepped: Bool
    var lastEpoch: Int?
    var trainStep: Int?

    /// Checks what `.metadata` says of the optimizer and asks for the items
    /// to read.
    init(entries: DCPEntries, requests: inout DCPRequests) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: DCPFolder.metadataName, reason: reason) }
        stepped = entries.parameters.contains { !$0.state.isEmpty }
        for p in entries.parameters {
            let model = p.model!
            var parameter = Parameter()
            if stepped {
                let keys = p.state.map(\.key)
                if let other = keys.first(where: { !DCPOptimizer.stateKeys.contains($0) }) {
                    throw bad("optimizer.state.\(p.names.name).\(other): ShardFS maps AdamW's state (step, exp_avg, exp_avg_sq), which NxD's ZeRO-1 AdamW keeps; this optimizer keeps \(other) too (amsgrad, or another optimizer)")
                }
                if let missing = DCPOptimizer.stateKeys.first(where: { !keys.contains($0) }) {
                    throw bad("optimizer.state.\(p.names.name).\(missing) is missing, where other parameters have their state (a parameter that never stepped?): NxD's optimizer needs every parameter's")
                }
            }
            for (key, fqn, entry) in p.state {
                switch (key, entry) {
                case ("step", .tensor(let t)):
                    guard t.size.isEmpty else { throw bad("\(fqn) has the size \(t.size), not a 0-d tensor's []") }
                    parameter.step = (fqn, requests.scalar(fqn, t))
                case ("step", .bytes):
                    parameter.step = (fqn, requests.value(fqn))
                case (_, .tensor(let t)):
                    guard t.size == model.size else {
                        throw bad("\(fqn) has the size \(t.size), but its parameter \(p.names.name) is \(model.size)")
                    }
                    guard t.dtype == .float32 else {
                        throw bad("\(fqn) is \(t.dtype): NxD's ZeRO-1 optimizer keeps its state in float32, and ShardFS does not widen it silently")
                    }
                    parameter.tensors[key] = (fqn, t, try requests.tensor(fqn, t))
                case (_, .bytes):
                    throw bad("\(fqn) is a bytes item, not AdamW's \(key) tensor")
                }
            }
            for (key, fqn, entry) in p.groupValues {
                guard DCPOptimizer.groupKeys.contains(key) else {
                    throw bad("\(fqn): ShardFS maps the param groups of torch's AdamW (\(DCPOptimizer.groupKeys.sorted().joined(separator: ", "))), which have no \(key)")
                }
                guard case .bytes = entry else { throw bad("\(fqn) is a tensor, not a param group's value") }
                parameter.groupValues.append((key, fqn, requests.value(fqn)))
            }
            for key in ["lr", "betas", "eps", "weight_decay"] where !p.groupValues.contains(where: { $0.key == key }) {
                throw bad("optimizer.param_groups.\(p.names.name).\(key) is missing: NxD's param groups need every parameter's lr, betas, eps and weight_decay")
            }
            parameters.append(parameter)
        }
        if case .bytes? = entries.scheduler["last_epoch"]?.entry { lastEpochRequest = requests.value("lr_scheduler.last_epoch") }
        if case .bytes? = entries.trainState["step"]?.entry { trainStepRequest = requests.value("train_state.step") }
    }

    private var lastEpochRequest: Int?
    private var trainStepRequest: Int?

    /// The training state from the items read (`found`, answering the
    /// requests), over the model's Hugging Face tensors `model`.
    func trainingState(found: [DCPItems.Found], requests: DCPRequests, entries: DCPEntries, model: [String: SourceTensor],
                       modelDType: DType?, grouping: OptimizerGrouping) throws(ShardFSError) -> TrainingState {
        /// A refusal naming the item of `request`.
        func bad(_ request: Int, _ reason: String) -> ShardFSError { .badSource(file: requests.name(request), reason: reason) }
        func number(_ request: Int) -> Double? {
            switch found[request] {
            case .scalar(let s): return s
            case .value(.int(let i)): return Double(i)
            case .value(.float(let f)): return f
            default: return nil
            }
        }
        func describe(_ request: Int) -> String {
            guard case .value(let v) = found[request] else { return "a tensor" }
            return ZeroOptimizerFile.describe(v)
        }

        // One step, a whole number, for every parameter.
        var step: (fqn: String, value: Int)?
        for p in parameters {
            guard let (fqn, request) = p.step else { continue }
            guard let v = number(request), v >= 0, v == v.rounded(), v < 1e15 else {
                throw bad(request, "is \(describe(request)), not a whole number of steps")
            }
            if let first = step, first.value != Int(v) {
                throw bad(request, "is \(Int(v)), but \(first.fqn) is \(first.value): NxD's optimizer keeps one step for every parameter (one run, one step count)")
            }
            step = step ?? (fqn, Int(v))
        }

        // The param groups' values, parameter by parameter.
        struct Values {
            var lr = 0.0, eps = 0.0, weightDecay = 0.0
            var betas: [Double] = []
            var initialLR: Double?
        }
        var values: [Values] = []
        for p in parameters {
            var v = Values()
            for (key, _, request) in p.groupValues {
                switch key {
                case "lr", "eps", "weight_decay", "initial_lr":
                    guard let x = number(request) else { throw bad(request, "is \(describe(request)), not a number") }
                    switch key {
                    case "lr": v.lr = x
                    case "eps": v.eps = x
                    case "weight_decay": v.weightDecay = x
                    default: v.initialLR = x
                    }
                case "betas":
                    var items: [PickleValue] = []
                    switch found[request] {
                    case .value(.tuple(let i)), .value(.list(let i)): items = i
                    default: break
                    }
                    guard items.count == 2, let b = DCPOptimizer.numbers(items) else { throw bad(request, "is \(describe(request)), not two numbers") }
                    v.betas = b
                case "amsgrad", "maximize":
                    guard case .value(.bool(false)) = found[request] else {
                        throw bad(request, "is \(describe(request)): NxD's AdamW has no \(key == "amsgrad" ? "AMSGrad" : "maximize"), so the run would not resume the same (False is what ShardFS maps)")
                    }
                case "decoupled_weight_decay":
                    guard case .value(.bool(true)) = found[request] else {
                        throw bad(request, "is \(describe(request)): Adam with L2 weight decay, not AdamW's decoupled decay, which NxD's AdamW applies")
                    }
                default:
                    break  // foreach, fused, capturable, differentiable: how torch runs the update, not what it computes
                }
            }
            values.append(v)
        }
        /// The request of parameter `i`'s value `key` (present: checked in `init`).
        func request(_ i: Int, _ key: String) -> Int { parameters[i].groupValues.first { $0.key == key }!.request }
        let first = values[0], firstName = entries.parameters[0].names.name
        for (i, v) in values.enumerated() {
            for (key, mine, theirs) in [("lr", [v.lr], [first.lr]), ("betas", v.betas, first.betas), ("eps", [v.eps], [first.eps])] where mine != theirs {
                throw bad(request(i, key), "is \(mine.count == 1 ? "\(mine[0])" : "\(mine)"), but optimizer.param_groups.\(firstName).\(key) is \(theirs.count == 1 ? "\(theirs[0])" : "\(theirs)"): NxD's param groups share one \(key)")
            }
        }

        // NxD's groups: the decay group takes the folder's weight_decay (one
        // value for all its parameters); the no-decay group has 0.0.
        let names = entries.parameters.map(\.names.huggingFaceName)
        let noDecay = grouping.groups(names).count > 1 ? Set(grouping.groups(names)[1]) : []
        var decay: (fqn: String, value: Double)?
        var undecayed: [(name: String, value: Double)] = []
        for (i, (p, v)) in zip(entries.parameters, values).enumerated() {
            if noDecay.contains(p.names.huggingFaceName) {
                if v.weightDecay != 0 { undecayed.append((p.names.name, v.weightDecay)) }
                continue
            }
            if let d = decay, d.value != v.weightDecay {
                throw bad(request(i, "weight_decay"), "is \(v.weightDecay), but \(d.fqn) is \(d.value): NxD's grouping (\(grouping)) puts both in one param group, with one weight_decay (say the training script's rule with --optimizer-groups)")
            }
            decay = decay ?? ("optimizer.param_groups.\(p.names.name).weight_decay", v.weightDecay)
        }
        func group(weightDecay: Double) -> OptimizerGroupSettings {
            OptimizerGroupSettings(settings: [
                PickleValue.Item(key: .string("weight_decay"), value: .float(weightDecay)),
                PickleValue.Item(key: .string("lr"), value: .float(first.lr)),
                PickleValue.Item(key: .string("betas"), value: .list(first.betas.map { .float($0) })),
                PickleValue.Item(key: .string("eps"), value: .float(first.eps)),
                PickleValue.Item(key: .string("correct_bias"), value: .bool(true)),
                PickleValue.Item(key: .string("capturable"), value: .bool(false)),
            ], paramsPosition: 6)
        }
        var groups = [group(weightDecay: decay?.value ?? 0)]
        if grouping.groups(names).count > 1 { groups.append(group(weightDecay: 0)) }

        // The state tensors, under Hugging Face names, in its row order.
        var stateTensors: [String: [String: SourceTensor]] = [:]
        for (p, parameter) in zip(entries.parameters, parameters) {
            for (key, (_, entry, range)) in parameter.tensors {
                stateTensors[key, default: [:]][p.names.huggingFaceName] = DCPRequests.assemble(
                    found, range, t: entry, name: p.names.huggingFaceName, permutedHeads: p.names.permutedHeads)
            }
        }

        var notes = [DCPOptimizer.resumeNote(step: step?.value, lr: first.lr, initialLR: first.initialLR,
                                             lastEpoch: lastEpochRequest.flatMap(number).map { Int($0) },
                                             trainStep: trainStepRequest.flatMap(number).map { Int($0) })]
        if let (name, value) = undecayed.first {
            notes.append("TorchTitan decayed \(name) and the other parameters of NxD's no-decay group with weight_decay \(value) (one param group); NxD's grouping (\(grouping)) resumes them with 0.0 (--optimizer-groups all keeps one group, decaying every parameter)")
        }
        if !entries.dataloader.isEmpty {
            notes.append("the folder's data loader state (\(entries.dataloader.count) entries: \(entries.dataloader.prefix(3).joined(separator: ", "))\(entries.dataloader.count > 3 ? ", ..." : "")) is skipped: NxD's data loading does not read TorchTitan's, so the resumed run's data order is its own")
        }
        notes.append("the model files keep the folder's \(modelDType?.rawValue ?? "dtypes") unless --dtype says otherwise (with bfloat16 the norms stay float32, as NxD's bf16 runs keep them); sharded_master_weights hold the float32 model whatever the dtype, so the folder's weights resume whether NxD loads the optimizer before the model (ZeRO-1 then re-shards the model it has) or after")

        let stateEntries: [(key: String, constant: OptimizerConstant?)] = stepped
            ? [("step", .plain(.int(step?.value ?? 0))), ("exp_avg", nil), ("exp_avg_sq", nil)] : []
        return TrainingState(
            dpSize: 1, modelDType: modelDType, xser: false, grouping: grouping,
            keys: ["state", "param_groups", "base_state", "shape_info", "sharded_master_weights"],
            groups: groups, stateEntries: stateEntries, stateTensors: stateTensors, masterWeights: model,
            carried: [("checkpoint", Array("1".utf8)), ("done", Array("1".utf8))], notes: notes,
            sourceIndexes: [(0, 0, names)], fromDCP: true)
    }

    static func numbers(_ items: [PickleValue]) -> [Double]? {
        var result: [Double] = []
        for item in items {
            switch item {
            case .int(let i): result.append(Double(i))
            case .float(let f): result.append(f)
            default: return nil
            }
        }
        return result
    }

    /// What a run resuming the NxD tag must do about what DCP cannot hold:
    /// NxD's `load_checkpoint` loads `scheduler.pt` whenever it is given a
    /// scheduler (and fails without the file), and returns the tag's
    /// `user_content.pt` (none here), from which NxD's examples take their
    /// global step and epoch.
    static func resumeNote(step: Int?, lr: Double, initialLR: Double?, lastEpoch: Int?, trainStep: Int?) -> String {
        let n = trainStep ?? lastEpoch ?? step
        let at = n.map { " \($0)" } ?? " N"
        return "the tag holds no scheduler.pt and no user_content.pt (a DCP folder has no NxD scheduler or user content): "
            + "NxD's load_checkpoint(..., scheduler=...) loads scheduler.pt unconditionally and fails without it, so resume with scheduler=None; "
            + "the script's new scheduler then restarts the LR schedule from its first step, warmup included (the param groups carry lr \(lr), TorchTitan's at step\(at), which a scheduler built before load_checkpoint overrides at its first step), "
            + "unless the script moves it to step\(at) (LambdaLR: last_epoch =\(at)\(initialLR.map { ", base lr \($0), TorchTitan's initial_lr" } ?? "")); and load_checkpoint returns no user content, so the examples' global_step and epoch start at 0 unless the script sets them (global_step =\(at))"
            + (step != nil && trainStep != nil && step != trainStep ? " (train_state.step is \(trainStep!), the optimizer's step \(step!): base_state carries the optimizer's)" : "")
    }
}
