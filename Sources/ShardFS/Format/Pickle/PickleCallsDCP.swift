/// The DCP metadata allow-list (`PickleAllowList.dcpMetadata`): the classes
/// a `torch.distributed.checkpoint` `.metadata` pickle holds, the callables
/// its fields are rebuilt with, torch.Size and torch dtypes. Making or
/// calling one only records the call (an `.instance` in the heap), never
/// runs anything; what its arguments and state must be is for the DCP reader
/// to check, where it can name the tensor concerned.
extension PickleMachine {
    /// What `module.name` stands for under the DCP allow-list.
    func dcpGlobal(_ module: String, _ name: String, at: String) throws(ShardFSError) -> PickleSlot {
        if let c = DCPPickleClass(rawValue: name), c.module == module { return .global(.dcp(c)) }
        if module == "torch" {
            if name == "Size" { return .global(.size) }
            if let dtype = DType.allCases.first(where: { $0.torchName == name }) { return .dtype(dtype) }
            // Let through so that the reader's refusal names the tensor.
            if PickleMachine.otherTorchDTypes.contains(name) { return .global(.otherDType(name)) }
        }
        throw fail("\(at) is not on the allow-list of what a DCP .metadata holds; refused without importing anything")
    }

    /// STACK_GLOBAL: protocol 4's GLOBAL, its module and name as strings on the stack.
    mutating func stackGlobal() throws(ShardFSError) {
        let operands = try pop(2)
        guard case .string(let module) = operands[0], case .string(let name) = operands[1] else {
            throw fail("\(here): the module and name are \(heap.kindName(operands[0])) and \(heap.kindName(operands[1])), not strings")
        }
        try push(try resolve(module, name, at: "global \(module).\(name) (STACK_GLOBAL at byte \(opcodeOffset))"))
    }

    /// REDUCE of a DCP callable: `_get_layout(name)`, `_MEM_FORMAT_ENCODING(n)`
    /// or `PosixPath(*parts)`, recorded with its arguments.
    mutating func dcpCall(_ c: DCPPickleClass, _ args: [PickleSlot], argumentsSlot: PickleSlot) throws(ShardFSError) -> PickleSlot {
        guard !c.isDataclass else { throw fail("\(here) calls \(PickleGlobal.dcp(c)), a dataclass DCP's pickle makes with NEWOBJ") }
        guard c == .posixPath || args.count == 1 else {
            throw fail("\(here): \(PickleGlobal.dcp(c)) called with \(args.count) arguments, not 1")
        }
        return .object(try allocate(.instance(c, built: false), [argumentsSlot]))
    }

    /// NEWOBJ of a DCP dataclass: `cls.__new__(cls)`, its fields to come from BUILD.
    mutating func newDCPObject(_ c: DCPPickleClass, _ args: [PickleSlot], argumentsSlot: PickleSlot) throws(ShardFSError) {
        guard c.isDataclass else { throw fail("\(here) makes a new \(PickleGlobal.dcp(c)), which DCP's pickle calls with REDUCE") }
        guard args.isEmpty else { throw fail("\(here): \(PickleGlobal.dcp(c)) made with \(args.count) arguments, not none") }
        try push(.object(try allocate(.instance(c, built: false), [argumentsSlot])))
    }

    /// BUILD on a DCP dataclass: records its state (a dict of fields, or
    /// TensorProperties' tuple), once.
    mutating func buildDCPObject(_ index: Int, _ c: DCPPickleClass, built: Bool, state: PickleSlot) throws(ShardFSError) {
        guard c.isDataclass else { throw fail("\(here) on \(c.kindName), which DCP's pickle never builds") }
        guard !built else { throw fail("\(here): \(c.kindName) built twice") }
        if case .object(let dict) = state, case .dict = heap.kinds[dict] {
            // Python copies the dict's items into the object here, so a later
            // SETITEM on the dict would not reach the object. Rather than
            // copy (a few bytes of pickle could then copy a big dict again
            // and again), the dict is frozen: setting its items is refused.
            stateDicts.insert(dict)
        }
        heap.setState(state, of: index)
    }
}
