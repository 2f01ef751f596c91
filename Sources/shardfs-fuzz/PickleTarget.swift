import ShardFS

/// The allow-list pickle reader on the input as a data.pkl: any input is
/// refused or read, within the limits. Run twice: with the default limits,
/// and with small ones so that the limits themselves are reached, and an
/// accepted tree is walked to check it respects them.
enum PickleTarget {
    static let smallLimits: PickleReader.Limits = {
        var limits = PickleReader.Limits()
        limits.maximumMemo = 64
        limits.maximumStack = 64
        limits.maximumMarks = 8
        limits.maximumItems = 4096
        limits.maximumStringLength = 256
        limits.maximumDepth = 8
        return limits
    }()

    static func run(_ input: [UInt8]) {
        _ = try? PickleReader.parse(input, file: "fuzz.pkl")
        guard let value = try? PickleReader.parse(input, file: "fuzz.pkl", limits: smallLimits) else { return }
        var nodes = 0
        walk(value, depth: 0, nodes: &nodes)
        invariant(nodes <= smallLimits.maximumItems, "\(nodes) nodes accepted, above \(smallLimits.maximumItems)")
    }

    /// Counts nodes, checking depth and what tensors and storages may hold.
    static func walk(_ value: PickleValue, depth: Int, nodes: inout Int) {
        nodes += 1
        switch value {
        case .tuple(let children), .list(let children):
            invariant(depth < smallLimits.maximumDepth, "containers nested \(depth + 1) deep")
            for child in children { walk(child, depth: depth + 1, nodes: &nodes) }
        case .dict(let items, _):
            invariant(depth < smallLimits.maximumDepth, "containers nested \(depth + 1) deep")
            for item in items {
                walk(item.key, depth: depth + 1, nodes: &nodes)
                walk(item.value, depth: depth + 1, nodes: &nodes)
            }
        case .tensor(let t):
            invariant(t.storageOffset >= 0 && t.shape.count == t.strides.count, "tensor view \(t)")
            invariant(t.shape.allSatisfy { $0 >= 0 } && t.strides.allSatisfy { $0 >= 0 }, "negative size or stride \(t)")
            invariant(t.storage.numel >= 0, "storage numel \(t.storage.numel)")
        case .storage(let s):
            invariant(s.numel >= 0, "storage numel \(s.numel)")
        case .size(let s):
            invariant(s.allSatisfy { $0 >= 0 }, "torch.Size \(s)")
        case .tensorReference(let tid):
            invariant(tid.map { $0 >= 0 } ?? true, "tid \(String(describing: tid))")
        case .instance(_, let arguments, let state):
            // As the heap holds it: a container of the arguments tuple and the state.
            invariant(depth < smallLimits.maximumDepth, "containers nested \(depth + 1) deep")
            walk(.tuple(arguments), depth: depth + 1, nodes: &nodes)
            if let state { walk(state, depth: depth + 1, nodes: &nodes) }
        default:
            break
        }
    }
}
