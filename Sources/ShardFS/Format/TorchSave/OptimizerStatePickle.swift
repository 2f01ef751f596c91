/// `data.pkl` of a ZeRO-1 optimizer file as NxD's `save_checkpoint` writes
/// it (docs/formats/zero1.md): torch_xla's `ZeroRedundancyOptimizer.state_dict()` after
/// NxD's move to CPU, which makes lists of its tuples and `torch.Size`s.
///
/// ```
/// {'state': {}, 'param_groups': [{..., 'params': [0, 1, ...]}, ...],
///  'base_state': {i: {'step': ..., 'exp_avg': T, 'exp_avg_sq': T}},
///  'shape_info': {i: [d0, d1]}, 'sharded_master_weights': {i: T}}
/// ```
///
/// Tensors are written by the caller (a tensor over a storage in a plain
/// file, a `TensorReference` in an xser one), numbered in pickle order,
/// which is the order torch.save numbers storages and xser tids.
public struct OptimizerStatePickle: Sendable {
    public enum Value: Sendable {
        /// A tensor; `id` is the caller's, handed back when it is written.
        case tensor(TensorDescription, id: Int)
        case plain(PickleValue)
    }

    public struct Group: Sendable {
        /// The hyper-parameters in order; `params` goes at `paramsPosition`.
        public let settings: [PickleValue.Item]
        public let paramsPosition: Int
        public let params: [Int]

        public init(settings: [PickleValue.Item], paramsPosition: Int, params: [Int]) {
            self.settings = settings
            self.paramsPosition = paramsPosition
            self.params = params
        }
    }

    public struct Parameter: Sendable {
        public let shape: [Int]
        /// `base_state[i]`, keys in order (empty before the first step).
        public let state: [(key: String, value: Value)]
        public let master: Value?

        public init(shape: [Int], state: [(key: String, value: Value)], master: Value?) {
            self.shape = shape
            self.state = state
            self.master = master
        }
    }

    /// The top-level keys, in order.
    public let keys: [String]
    public let groups: [Group]
    public let parameters: [Parameter]

    public init(keys: [String], groups: [Group], parameters: [Parameter]) {
        self.keys = keys
        self.groups = groups
        self.parameters = parameters
    }

    /// The pickle; `tensor(writer, n, description, id)` writes the n-th
    /// tensor (n from 0, in pickle order).
    public func pickle(_ tensor: (inout PickleWriter, Int, TensorDescription, Int) -> Void) -> [UInt8] {
        var p = PickleWriter()
        var count = 0
        func write(_ p: inout PickleWriter, _ value: Value) {
            switch value {
            case let .tensor(description, id):
                tensor(&p, count, description, id)
                count += 1
            case let .plain(v):
                p.value(v)
            }
        }
        let indices = Array(parameters.indices)
        p.dict(keys) { p, key in
            p.sharedString(key)
            switch key {
            case "param_groups":
                p.list(groups) { p, group in
                    var items = group.settings.map { (key: $0.key, value: Value.plain($0.value)) }
                    let params = PickleValue.list(group.params.map { .int($0) })
                    items.insert((.string("params"), .plain(params)), at: min(group.paramsPosition, items.count))
                    p.dict(items) { p, item in
                        p.value(item.key)
                        write(&p, item.value)
                    }
                }
            case "base_state":
                let stepped = parameters.allSatisfy { !$0.state.isEmpty }
                p.dict(stepped ? indices : []) { p, i in
                    p.int(i)
                    p.dict(parameters[i].state) { p, entry in
                        p.sharedString(entry.key)
                        write(&p, entry.value)
                    }
                }
            case "shape_info":
                p.dict(indices) { p, i in
                    p.int(i)
                    p.list(parameters[i].shape) { p, size in p.int(size) }
                }
            case "sharded_master_weights":
                p.dict(indices.filter { parameters[$0].master != nil }) { p, i in
                    p.int(i)
                    write(&p, parameters[i].master!)
                }
            default:
                // "state": the ZeRO wrapper's own, always empty.
                p.value(.dict([], ordered: false))
            }
        }
        return p.finish()
    }
}
