/// The allow-list: the globals torch.save and NxD's xser pickle, and what
/// "calling" each one builds. Nothing is imported or run; anything else is
/// refused naming it. DCP metadata's allow-list is in PickleCallsDCP.swift.
extension PickleMachine {
    static let floatDTypes = "bfloat16, float16, float32, float64"
    static let floatStorages = "BFloat16Storage, HalfStorage, FloatStorage, DoubleStorage"
    /// torch dtypes that are not floats ShardFS reads, so that their refusal says why.
    static let otherTorchDTypes: Set<String> = [
        "uint8", "int8", "int16", "int32", "int64", "short", "int", "long", "bool",
        "complex32", "complex64", "complex128", "cfloat", "cdouble", "chalf", "uint16", "uint32", "uint64",
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "qint8", "quint8", "qint32",
    ]

    /// GLOBAL: `module\nname\n`. A dtype is a value; the rest are callables.
    mutating func global() throws(ShardFSError) -> PickleSlot {
        let module = try line(), name = try line()
        return try resolve(module, name, at: "global \(module).\(name) (GLOBAL at byte \(opcodeOffset))")
    }

    /// What `module.name` stands for under the allow-list; `at` names it in refusals.
    func resolve(_ module: String, _ name: String, at: String) throws(ShardFSError) -> PickleSlot {
        if allowList == .dcpMetadata { return try dcpGlobal(module, name, at: at) }
        switch (module, name) {
        case ("collections", "OrderedDict"): return .global(.orderedDict)
        case ("torch._utils", "_rebuild_tensor_v2"): return .global(.rebuildTensorV2)
        case ("torch._utils", "_rebuild_parameter"): return .global(.rebuildParameter)
        case ("torch._utils", "_rebuild_parameter_with_state"): return .global(.rebuildParameterWithState)
        case ("torch", "Size"): return .global(.size)
        case ("torch_xla.utils.serialization", "TensorReference"): return .global(.tensorReferenceClass)
        case ("torch", _):
            // torch.bfloat16 etc., by their canonical names (a dtype pickles as its name).
            if let dtype = DType.allCases.first(where: { $0.torchName == name }) { return .dtype(dtype) }
            if let dtype = DType.allCases.first(where: { $0.torchStorageClass == name }) { return .global(.storageClass(dtype)) }
            if name.hasSuffix("Storage") {
                throw fail("\(at): ShardFS reads floating-point storages only (\(PickleMachine.floatStorages))")
            }
            if PickleMachine.otherTorchDTypes.contains(name) {
                throw fail("\(at): ShardFS reads floating-point dtypes only (\(PickleMachine.floatDTypes))")
            }
        default: break
        }
        throw fail("\(at) is not on the allow-list of what torch.save writes for float tensors; refused without importing anything")
    }

    /// A GLOBAL operand line, without its newline.
    private mutating func line() throws(ShardFSError) -> String {
        let start = position
        let limit = min(bytes.count, start + 1024)
        guard let end = bytes[start..<limit].firstIndex(of: 0x0A) else {
            throw fail("\(here): no newline within \(limit - start) bytes of its operand (truncated, or a name over 1023 bytes)")
        }
        position = end + 1
        guard let text = String(validating: bytes[start..<end], as: UTF8.self) else { throw fail("\(here): the name is not valid UTF-8") }
        return text
    }

    /// The global a callable slot holds, or a refusal saying what it is.
    func callable(_ slot: PickleSlot) throws(ShardFSError) -> PickleGlobal {
        guard case .global(let g) = slot else { throw fail("\(here) calls \(heap.kindName(slot)), not an allowed class or function") }
        return g
    }

    func arguments(_ slot: PickleSlot, of g: PickleGlobal) throws(ShardFSError) -> [PickleSlot] {
        guard let args = heap.tuple(slot) else { throw fail("\(here): the arguments to \(g) are \(heap.kindName(slot)), not a tuple") }
        return args
    }

    /// REDUCE: `callable(*args)`, for the callables torch.save's pickles call.
    mutating func reduce() throws(ShardFSError) {
        let operands = try pop(2)
        let g = try callable(operands[0])
        let args = try arguments(operands[1], of: g)
        func expect(_ counts: ClosedRange<Int>) throws(ShardFSError) {
            guard counts.contains(args.count) else {
                let wanted = counts.count == 1 ? "\(counts.lowerBound)" : "\(counts.lowerBound) or \(counts.upperBound)"
                throw fail("\(here): \(g) called with \(args.count) arguments, not \(wanted)")
            }
        }
        switch g {
        case .orderedDict:
            try expect(0...0)
            try push(.object(try allocate(.dict(ordered: true))))
        case .rebuildTensorV2:
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            try expect(6...7)
            let tensor = try rebuildTensor(args)
            try count(1)
            try push(heap.store(tensor))
        case .rebuildParameter, .rebuildParameterWithState:
            // (data, requires_grad, backward_hooks[, state]): the parameter is its tensor.
            try expect(g == .rebuildParameter ? 3...3 : 4...4)
            guard case .tensor = args[0] else { throw fail("\(here): \(g) of \(heap.kindName(args[0])), not a tensor") }
            guard case .bool = args[1] else { throw fail("\(here): requires_grad is \(heap.kindName(args[1])), not a bool") }
            try expectNoHooks(args[2], of: g)
            try push(args[0])
        case .size:
            try expect(1...1)
            try push(.size(try integers(args[0], "the dimensions of torch.Size")))
        case .dcp(let c):
            try push(try dcpCall(c, args, argumentsSlot: operands[1]))
        case .storageClass, .tensorReferenceClass, .otherDType:
            throw fail("\(here) calls \(g), which \(allowList.writer) never calls")
        }
    }

    private func rebuildTensor(_ args: [PickleSlot]) throws(ShardFSError) -> PickledTensor {
        let g = PickleGlobal.rebuildTensorV2
        guard case .storage(let storageIndex) = args[0] else { throw fail("\(here): \(g) of \(heap.kindName(args[0])), not a storage") }
        guard case .int(let offset) = args[1] else { throw fail("\(here): the storage offset is \(heap.kindName(args[1])), not an int") }
        guard offset >= 0 else { throw fail("\(here): the storage offset \(offset) is negative") }
        let shape = try integers(args[2], "the size"), strides = try integers(args[3], "the stride")
        guard shape.count == strides.count else {
            throw fail("\(here): the size \(shape) and stride \(strides) differ in length")
        }
        guard case .bool = args[4] else { throw fail("\(here): requires_grad is \(heap.kindName(args[4])), not a bool") }
        try expectNoHooks(args[5], of: g)
        if args.count == 7 {
            // Tensor metadata (a dict, or None) carries no layout: ignored.
            switch args[6] {
            case .none: break
            case let slot where heap.isDict(slot): break
            default: throw fail("\(here): the tensor metadata is \(heap.kindName(args[6])), not a dict")
            }
        }
        return PickledTensor(storage: heap.storages[storageIndex], storageOffset: offset, shape: shape, strides: strides)
    }

    /// Backward hooks are pickled as an empty OrderedDict; any hook would be code.
    private func expectNoHooks(_ slot: PickleSlot, of g: PickleGlobal) throws(ShardFSError) {
        guard case .object(let index) = slot, case .dict = heap.kinds[index] else {
            throw fail("\(here): the backward hooks of \(g) are \(heap.kindName(slot)), not a dict")
        }
        guard heap.contents[index].isEmpty else { throw fail("\(here): \(g) with backward hooks, which would be code") }
    }

    /// A tuple of non-negative ints (a size or a stride).
    func integers(_ slot: PickleSlot, _ what: String) throws(ShardFSError) -> [Int] {
        guard let elements = heap.tuple(slot) else { throw fail("\(here): \(what) is \(heap.kindName(slot)), not a tuple") }
        var values: [Int] = []
        values.reserveCapacity(elements.count)
        for element in elements {
            guard case .int(let v) = element else { throw fail("\(here): \(what) holds \(heap.kindName(element)), not an int") }
            guard v >= 0 else { throw fail("\(here): \(what) holds \(v), a negative number") }
            values.append(v)
        }
        return values
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`, for TensorReference only.
    mutating func newObject() throws(ShardFSError) {
        let operands = try pop(2)
        let g = try callable(operands[0])
        let args = try arguments(operands[1], of: g)
        if case .dcp(let c) = g { return try newDCPObject(c, args, argumentsSlot: operands[1]) }
        guard g == .tensorReferenceClass else {
            throw fail("\(here) makes a new \(g); only \(allowList == .torchSave ? "TensorReference objects" : "DCP's dataclasses") are made so")
        }
        guard args.isEmpty else { throw fail("\(here): TensorReference made with \(args.count) arguments, not none") }
        try push(.object(try allocate(.tensorReference(tid: nil))))
    }

    /// BUILD: sets an object's state. A TensorReference gets `{'tid': n}`;
    /// an OrderedDict (a state_dict) gets `{'_metadata': ...}`, which says
    /// nothing about tensors and is ignored.
    mutating func build() throws(ShardFSError) {
        let state = try pop(1)[0]
        let object = try top()
        let allowed = allowList == .torchSave ? "only TensorReference and OrderedDict state is allowed" : "only DCP's dataclasses have state"
        guard case .object(let index) = object else { throw fail("\(here) on \(heap.kindName(object)): \(allowed)") }
        if case .instance(let c, let built) = heap.kinds[index] { return try buildDCPObject(index, c, built: built, state: state) }
        guard case .object(let stateIndex) = state, case .dict = heap.kinds[stateIndex] else {
            throw fail("\(here): the state of \(heap.kindName(object)) is \(heap.kindName(state)), not a dict")
        }
        let items = heap.contents[stateIndex]
        switch heap.kinds[index] {
        case .tensorReference(let tid):
            guard tid == nil else { throw fail("\(here): a TensorReference built twice") }
            guard items.count == 2, case .string("tid") = items[0] else {
                throw fail("\(here): a TensorReference's state must be exactly {'tid': n}")
            }
            guard case .int(let n) = items[1], n >= 0 else { throw fail("\(here): a TensorReference's tid is \(heap.kindName(items[1])), not an int >= 0") }
            heap.setTID(n, of: index)
        case .dict(ordered: true):
            var i = 0
            while i < items.count {
                guard case .string = items[i] else { throw fail("\(here): an OrderedDict's state has a key that is \(heap.kindName(items[i])), not an attribute name") }
                i += 2
            }
        default:
            throw fail("\(here) on \(heap.kindName(object)): \(allowed)")
        }
    }

    /// BINPERSID's operand: `('storage', <storage class>, key, location, numel)`.
    func persistentStorage(_ slot: PickleSlot) throws(ShardFSError) -> PickledStorage {
        guard let id = heap.tuple(slot) else { throw fail("\(here): the persistent id is \(heap.kindName(slot)), not a tuple") }
        guard id.count == 5, case .string("storage") = id[0] else {
            throw fail("\(here): the persistent id is not ('storage', class, key, location, numel)")
        }
        guard case .global(.storageClass(let dtype)) = id[1] else {
            throw fail("\(here): the storage class is \(heap.kindName(id[1])), not one of \(PickleMachine.floatStorages)")
        }
        guard case .string(let key) = id[2], !key.isEmpty else { throw fail("\(here): the storage key is \(heap.kindName(id[2])), not a non-empty string") }
        guard case .string(let location) = id[3] else { throw fail("\(here): storage \(key)'s location is \(heap.kindName(id[3])), not a string") }
        guard case .int(let numel) = id[4], numel >= 0 else { throw fail("\(here): storage \(key)'s numel is \(heap.kindName(id[4])), not an int >= 0") }
        return PickledStorage(dtype: dtype, key: key, location: location, numel: numel)
    }
}
