/// One ZeRO-1 optimizer file of a training tag (`optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt`,
/// docs/formats/zero1.md), read down to located shards: what torch_xla's
/// `ZeroRedundancyOptimizer.state_dict()` held on that rank, after NxD's
/// move to CPU. Reads the zip directories and pickles (and the few bytes of
/// a tensor `step`), never the state's data.
///
/// ```
/// {'state': {}, 'param_groups': [{..., 'params': [0, 1, ...]}, ...],
///  'base_state': {i: {'step': ..., 'exp_avg': T, 'exp_avg_sq': T}},
///  'shape_info': {i: [d0, d1, ...]}, 'sharded_master_weights': {i: T}}
/// ```
struct ZeroOptimizerFile: Sendable {
    /// A shard of one state tensor, located in `file` (an index into the
    /// tag's files).
    struct Shard: Sendable {
        let file: Int
        let tensor: LocatedTensor
    }

    typealias Constant = OptimizerConstant

    enum Entry: Sendable {
        case shard(Shard)
        case constant(Constant)
    }

    struct Parameter: Sendable {
        /// `shape_info[i]`: the parameter's TP-local shape.
        let shape: [Int]
        /// `base_state[i]` in file order; empty when the optimizer has not stepped.
        var state: [(key: String, entry: Entry)]
        /// `sharded_master_weights[i]`.
        var master: Shard?
    }

    /// One of `param_groups`, with its parameter indices.
    struct Group: Equatable, Sendable {
        let settings: OptimizerGroupSettings
        let params: [Int]
    }

    let dp: Int, tp: Int, pp: Int
    /// Relative to the tag, for messages.
    let path: String
    /// The top-level keys in file order.
    let keys: [String]
    let groups: [Group]
    /// By index: 0 ..< count, the order of the groups' `params`.
    var parameters: [Parameter]

    /// The top-level keys torch_xla's optimizer writes; anything else (the
    /// expert-parallel offsets of NxD's MoE optimizer, for one) is refused.
    static let knownKeys: Set<String> = ["state", "param_groups", "base_state", "shape_info", "sharded_master_weights"]

    init(dp: Int, tp: Int, pp: Int, path: String, keys: [String], groups: [Group], parameters: [Parameter]) {
        self.dp = dp
        self.tp = tp
        self.pp = pp
        self.path = path
        self.keys = keys
        self.groups = groups
        self.parameters = parameters
    }

    /// The shard of state `key` (nil: the master weight), if the parameter has one.
    func shard(_ key: String?, of index: Int) -> Shard? {
        let parameter = parameters[index]
        guard let key else { return parameter.master }
        for entry in parameter.state where entry.key == key {
            if case .shard(let shard) = entry.entry { return shard }
        }
        return nil
    }

    /// Reads a parsed file's tree. `tensor` resolves a value standing for a
    /// tensor (a pickled tensor in a plain file, a TensorReference in an
    /// xser one) to its shard, or says what is wrong; `scalar` reads the
    /// element of a 0-d one.
    init(dp: Int, tp: Int, pp: Int, path: String, root: PickleValue,
         tensor: (PickleValue, String) throws(ShardFSError) -> Shard?,
         scalar: (Shard) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: path, reason: reason) }
        self.dp = dp
        self.tp = tp
        self.pp = pp
        self.path = path
        let top = try ZeroOptimizerFile.stringKeyed(root, path: path, what: "data.pkl")
        keys = top.map(\.key)
        if let unknown = keys.first(where: { !ZeroOptimizerFile.knownKeys.contains($0) }) {
            throw bad("holds \(unknown), which a ZeRO-1 optimizer's state_dict does not (ShardFS reads torch_xla's ZeroRedundancyOptimizer state: state, param_groups, base_state, shape_info, sharded_master_weights)")
        }
        let byKey = Dictionary(top.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        if byKey["base_state"] == nil, case .dict(let items, _)? = byKey["state"], !items.isEmpty {
            throw bad("holds the state of an optimizer without ZeRO-1 (its state per parameter, no base_state): ShardFS reshards ZeRO-1 optimizer state only (--weights-only converts the weights alone)")
        }
        guard let groupsValue = byKey["param_groups"], let shapesValue = byKey["shape_info"], let statesValue = byKey["base_state"] else {
            let missing = ["param_groups", "shape_info", "base_state"].first { byKey[$0] == nil } ?? ""
            throw bad("has no \(missing): not the state of a ZeRO-1 optimizer (torch_xla's ZeroRedundancyOptimizer writes param_groups, base_state and shape_info)")
        }
        if let state = byKey["state"] {
            guard case .dict(let items, _) = state, items.isEmpty else {
                throw bad("its state is \(state.kindName) with entries: the ZeRO-1 wrapper keeps its state in base_state, and ShardFS does not know what these are")
            }
        }
        groups = try ZeroOptimizerFile.groups(groupsValue, path: path)
        let indices = groups.flatMap(\.params)
        guard indices == Array(0..<indices.count) else {
            throw bad("param_groups number their params \(ZeroOptimizerFile.summary(indices)), not 0, 1, ... in group order as torch's Optimizer.state_dict does")
        }
        let shapes = try ZeroOptimizerFile.intKeyed(shapesValue, path: path, what: "shape_info", count: indices.count)
        let states = try ZeroOptimizerFile.intKeyed(statesValue, path: path, what: "base_state", count: indices.count, mayBeEmpty: true)
        let masters = try byKey["sharded_master_weights"].map { (v) throws(ShardFSError) in
            try ZeroOptimizerFile.intKeyed(v, path: path, what: "sharded_master_weights", count: indices.count)
        }
        var parameters: [Parameter] = []
        parameters.reserveCapacity(indices.count)
        for index in indices {
            let shape = try ZeroOptimizerFile.shape(shapes[index]!, path: path, index: index)
            var state: [(key: String, entry: Entry)] = []
            if let value = states[index] {
                for item in try ZeroOptimizerFile.stringKeyed(value, path: path, what: "base_state[\(index)]") {
                    if let shard = try tensor(item.value, "base_state[\(index)][\(item.key)]") {
                        if shard.tensor.shape.isEmpty {
                            state.append((item.key, .constant(.scalarTensor(shard.tensor.dtype, try scalar(shard)))))
                        } else {
                            state.append((item.key, .shard(shard)))
                        }
                    } else if ZeroOptimizerFile.isNumber(item.value) {
                        state.append((item.key, .constant(.plain(item.value))))
                    } else {
                        throw bad("base_state[\(index)][\(item.key)] is \(item.value.kindName); ShardFS reshards tensors and carries int or float steps")
                    }
                }
            }
            var master: Shard?
            if let masters {
                guard let shard = try tensor(masters[index]!, "sharded_master_weights[\(index)]") else {
                    throw bad("sharded_master_weights[\(index)] is \(masters[index]!.kindName), not a tensor")
                }
                master = shard
            }
            parameters.append(Parameter(shape: shape, state: state, master: master))
        }
        self.parameters = parameters
    }

    // MARK: The tree's parts

    static func stringKeyed(_ value: PickleValue, path: String, what: String) throws(ShardFSError) -> [(key: String, value: PickleValue)] {
        guard case .dict(let items, _) = value else {
            throw ShardFSError.badSource(file: path, reason: "\(what) is \(value.kindName), not a dict")
        }
        var seen: Set<String> = []
        var result: [(key: String, value: PickleValue)] = []
        for item in items {
            guard case .string(let key) = item.key else {
                throw ShardFSError.badSource(file: path, reason: "\(what): a key is \(item.key.kindName), not a string")
            }
            guard seen.insert(key).inserted else { throw ShardFSError.badSource(file: path, reason: "\(what): key \(key) appears twice") }
            result.append((key, item.value))
        }
        return result
    }

    /// A dict keyed by the parameter indices 0 ..< count, each once (or
    /// empty, when `mayBeEmpty`: an optimizer that has not stepped).
    static func intKeyed(_ value: PickleValue, path: String, what: String, count: Int,
                         mayBeEmpty: Bool = false) throws(ShardFSError) -> [Int: PickleValue] {
        guard case .dict(let items, _) = value else {
            throw ShardFSError.badSource(file: path, reason: "\(what) is \(value.kindName), not a dict")
        }
        var result: [Int: PickleValue] = [:]
        for item in items {
            guard case .int(let index) = item.key, (0..<count).contains(index) else {
                throw ShardFSError.badSource(
                    file: path, reason: "\(what) has key \(describe(item.key)), not a parameter index of param_groups (0 to \(count - 1))")
            }
            guard result.updateValue(item.value, forKey: index) == nil else {
                throw ShardFSError.badSource(file: path, reason: "\(what) has parameter \(index) twice")
            }
        }
        if result.count != count && !(mayBeEmpty && result.isEmpty) {
            let missing = (0..<count).first { result[$0] == nil } ?? 0
            throw ShardFSError.badSource(file: path, reason: "\(what) has no entry for parameter \(missing), which param_groups list")
        }
        return result
    }

    static func groups(_ value: PickleValue, path: String) throws(ShardFSError) -> [Group] {
        guard case .list(let items) = value, !items.isEmpty else {
            throw ShardFSError.badSource(file: path, reason: "param_groups is \(value.kindName == "a list" ? "an empty list" : value.kindName), not a list of groups")
        }
        var groups: [Group] = []
        for (number, item) in items.enumerated() {
            let entries = try stringKeyed(item, path: path, what: "param_groups[\(number)]")
            guard let position = entries.firstIndex(where: { $0.key == "params" }) else {
                throw ShardFSError.badSource(file: path, reason: "param_groups[\(number)] has no params")
            }
            guard case .list(let list) = entries[position].value else {
                throw ShardFSError.badSource(file: path, reason: "param_groups[\(number)]['params'] is \(entries[position].value.kindName), not a list")
            }
            var params: [Int] = []
            for element in list {
                guard case .int(let index) = element else {
                    throw ShardFSError.badSource(file: path, reason: "param_groups[\(number)]['params'] holds \(element.kindName), not parameter indices")
                }
                params.append(index)
            }
            var settings: [PickleValue.Item] = []
            for (offset, entry) in entries.enumerated() where offset != position {
                guard PickleWriter.isPlain(entry.value) else {
                    throw ShardFSError.badSource(
                        file: path, reason: "param_groups[\(number)]['\(entry.key)'] is \(entry.value.kindName); ShardFS carries plain values (numbers, bools, None, strings, lists) only")
                }
                settings.append(PickleValue.Item(key: .string(entry.key), value: entry.value))
            }
            groups.append(Group(settings: OptimizerGroupSettings(settings: settings, paramsPosition: position), params: params))
        }
        return groups
    }

    /// `shape_info[i]`: a list (NxD's move to CPU makes lists of tuples and
    /// torch.Size), a tuple or a torch.Size of non-negative ints.
    static func shape(_ value: PickleValue, path: String, index: Int) throws(ShardFSError) -> [Int] {
        let elements: [PickleValue]
        switch value {
        case .list(let items), .tuple(let items): elements = items
        case .size(let sizes): return sizes
        default: throw ShardFSError.badSource(file: path, reason: "shape_info[\(index)] is \(value.kindName), not a shape")
        }
        var shape: [Int] = []
        for element in elements {
            guard case .int(let size) = element, size >= 0 else {
                throw ShardFSError.badSource(file: path, reason: "shape_info[\(index)] holds \(describe(element)), not a size")
            }
            shape.append(size)
        }
        guard (1...2).contains(shape.count) else {
            throw ShardFSError.badSource(file: path, reason: "shape_info[\(index)] is \(shape): Llama parameters have 1 or 2 dimensions")
        }
        return shape
    }

    static func isNumber(_ value: PickleValue) -> Bool {
        switch value {
        case .int, .float: return true
        default: return false
        }
    }

    static func describe(_ value: PickleValue) -> String {
        switch value {
        case .int(let i): return String(i)
        case .string(let s): return "'\(s.prefix(64))'"
        default: return value.kindName
        }
    }

    /// "0, 1, 2, ..." for messages: the first few of a list.
    static func summary(_ indices: [Int]) -> String {
        indices.prefix(6).map(String.init).joined(separator: ", ") + (indices.count > 6 ? ", ..." : "")
    }
}
