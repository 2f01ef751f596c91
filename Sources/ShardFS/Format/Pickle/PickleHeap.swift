/// A value on the pickle machine's stack or in its memo. Containers live in
/// the heap and are referred to by index, so that a dict or list mutated
/// after being memoized is the same object wherever it was fetched (as in
/// Python), pushing or memoizing never copies one, and nothing here nests
/// (no recursion on release, however deep the pickle). Storages and tensors
/// live in the heap too, to keep a slot at 24 bytes: the stack, the memo and
/// every container are arrays of slots.
enum PickleSlot {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case object(Int)
    case storage(Int)
    case tensor(Int)
    case size([Int])
    case dtype(DType)
    case global(PickleGlobal)
}

/// The containers a pickle builds.
struct PickleHeap {
    enum Kind {
        case tuple
        case list
        case dict(ordered: Bool)
        case tensorReference(tid: Int?)
        /// An object of a DCP class (DCP allow-list only). Its contents are
        /// the tuple of arguments it was made with, then, once `built`, the
        /// state BUILD gave it.
        case instance(DCPPickleClass, built: Bool)
    }

    /// Index of the empty tuple, which Python shares (EMPTY_TUPLE makes no new object).
    static let emptyTuple = 0

    private(set) var kinds: [Kind] = [.tuple]
    /// Tuple and list elements; a dict's keys and values alternate.
    var contents: [[PickleSlot]] = [[]]
    private(set) var storages: [PickledStorage] = []
    private(set) var tensors: [PickledTensor] = []

    mutating func allocate(_ kind: Kind, _ elements: [PickleSlot] = []) -> Int {
        kinds.append(kind)
        contents.append(elements)
        return kinds.count - 1
    }

    mutating func store(_ storage: PickledStorage) -> PickleSlot {
        storages.append(storage)
        return .storage(storages.count - 1)
    }

    mutating func store(_ tensor: PickledTensor) -> PickleSlot {
        tensors.append(tensor)
        return .tensor(tensors.count - 1)
    }

    mutating func setTID(_ tid: Int, of object: Int) {
        kinds[object] = .tensorReference(tid: tid)
    }

    /// BUILD on a DCP object: records its state.
    mutating func setState(_ state: PickleSlot, of object: Int) {
        guard case .instance(let c, built: false) = kinds[object] else { return }
        kinds[object] = .instance(c, built: true)
        contents[object].append(state)
    }

    /// What a slot is, for messages.
    func kindName(_ slot: PickleSlot) -> String {
        switch slot {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        case .size: return "a torch.Size"
        case .dtype: return "a torch.dtype"
        case .global(let g): return "the global \(g)"
        case .object(let index):
            switch kinds[index] {
            case .tuple: return "a tuple"
            case .list: return "a list"
            case .dict(let ordered): return ordered ? "an OrderedDict" : "a dict"
            case .tensorReference: return "a TensorReference"
            case .instance(let c, _): return c.kindName
            }
        }
    }

    func isDict(_ slot: PickleSlot) -> Bool {
        guard case .object(let index) = slot, case .dict = kinds[index] else { return false }
        return true
    }

    /// A built MetadataIndex: DCP's one frozen, so hashable, dataclass (a dict key in Python).
    func isMetadataIndex(_ index: Int) -> Bool {
        guard case .instance(.metadataIndex, built: true) = kinds[index] else { return false }
        return true
    }

    /// The elements of `slot` when it is a tuple.
    func tuple(_ slot: PickleSlot) -> [PickleSlot]? {
        guard case .object(let index) = slot, case .tuple = kinds[index] else { return nil }
        return contents[index]
    }

    /// The tree `root` stands for. Shared containers are converted once and
    /// shared (copy-on-write), but the tree's size counts every occurrence:
    /// a pickle that doubles one object per memo entry is refused here
    /// instead of swamping whatever walks the result. A container holding
    /// itself is refused too.
    func tree(_ root: PickleSlot, maximumDepth: Int, maximumNodes: Int) -> Result<PickleValue, TreeFailure> {
        var converter = TreeConverter(heap: self, maximumDepth: maximumDepth, maximumNodes: maximumNodes)
        return converter.convert(root, depth: 0).map(\.value)
    }

    enum TreeFailure: Error {
        case tooDeep
        case tooLarge
        case containsItself
    }
}

/// Converts heap objects to PickleValue trees, each object once.
private struct TreeConverter {
    let heap: PickleHeap
    let maximumDepth: Int
    let maximumNodes: Int
    /// Each converted container with its tree's node count and height (in
    /// containers), so that a shared one, met again deeper, still respects
    /// the depth limit.
    var done: [Converted?]
    var inProgress: [Bool]

    typealias Converted = (value: PickleValue, nodes: Int, height: Int)

    init(heap: PickleHeap, maximumDepth: Int, maximumNodes: Int) {
        self.heap = heap
        self.maximumDepth = maximumDepth
        self.maximumNodes = maximumNodes
        done = Array(repeating: nil, count: heap.kinds.count)
        inProgress = Array(repeating: false, count: heap.kinds.count)
    }

    mutating func convert(_ slot: PickleSlot, depth: Int) -> Result<Converted, PickleHeap.TreeFailure> {
        switch slot {
        case .none: return .success((.none, 1, 0))
        case .bool(let b): return .success((.bool(b), 1, 0))
        case .int(let i): return .success((.int(i), 1, 0))
        case .float(let f): return .success((.float(f), 1, 0))
        case .string(let s): return .success((.string(s), 1, 0))
        case .storage(let s): return .success((.storage(heap.storages[s]), 1, 0))
        case .tensor(let t): return .success((.tensor(heap.tensors[t]), 1, 0))
        case .size(let s): return .success((.size(s), 1, 0))
        case .dtype(let d): return .success((.dtype(d), 1, 0))
        case .global(let g): return .success((.global(g), 1, 0))
        case .object(let index):
            if let known = done[index] {
                return depth + known.height <= maximumDepth ? .success(known) : .failure(.tooDeep)
            }
            guard depth < maximumDepth else { return .failure(.tooDeep) }
            guard !inProgress[index] else { return .failure(.containsItself) }
            inProgress[index] = true
            defer { inProgress[index] = false }
            var nodes = 1, height = 1
            var children: [PickleValue] = []
            children.reserveCapacity(heap.contents[index].count)
            for element in heap.contents[index] {
                switch convert(element, depth: depth + 1) {
                case .failure(let failure): return .failure(failure)
                case .success(let child):
                    nodes += child.nodes
                    height = max(height, child.height + 1)
                    guard nodes <= maximumNodes else { return .failure(.tooLarge) }
                    children.append(child.value)
                }
            }
            let value: PickleValue
            switch heap.kinds[index] {
            case .tuple: value = .tuple(children)
            case .list: value = .list(children)
            case .tensorReference(let tid): value = .tensorReference(tid: tid)
            case .instance(let c, _):
                // contents: the arguments tuple (the machine always puts one
                // there), then the state if built.
                var arguments: [PickleValue] = []
                if case .tuple(let a)? = children.first { arguments = a }
                value = .instance(c, arguments: arguments, state: children.count > 1 ? children[1] : nil)
            case .dict(let ordered):
                var items: [PickleValue.Item] = []
                items.reserveCapacity(children.count / 2)
                var i = 0
                while i + 1 < children.count {
                    items.append(PickleValue.Item(key: children[i], value: children[i + 1]))
                    i += 2
                }
                value = .dict(items, ordered: ordered)
            }
            done[index] = (value, nodes, height)
            return .success((value, nodes, height))
        }
    }
}
