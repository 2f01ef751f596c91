/// Reads a DCP `.metadata` from untrusted bytes: the pickle runs on the
/// allow-list machine with DCP's classes only (PickleCallsDCP.swift), then
/// its objects are walked along `Metadata`'s fixed schema, each field's type
/// checked, and the result checked as a whole (DCPMetadataChecks.swift).
/// Accepts what torch 2.13 writes (protocol 4) and what `pickled()` writes.
extension DCPMetadata {
    /// torch writes about 25 container values and 20 memo entries a tensor
    /// chunk (its ChunkStorageMetadata, MetadataIndex and _StorageInfo), in
    /// about 150 bytes: 32M of each is 1.3M chunks (a 70B training state
    /// sharded 256 ways is 0.75M) in a 190 MB file, and at worst about 2 GB
    /// of machine state, whatever the length (up to 1 GiB: DCPFolder).
    static let pickleLimits: PickleReader.Limits = {
        var limits = PickleReader.Limits()
        limits.maximumLength = 1 << 30
        limits.maximumItems = 1 << 25
        limits.maximumMemo = 1 << 25
        return limits
    }()

    /// The metadata the pickle `bytes` holds; `file` names it in refusals.
    public static func parse(_ bytes: [UInt8], file: String) throws(ShardFSError) -> DCPMetadata {
        let (root, heap) = try PickleReader.run(bytes, file: file, limits: pickleLimits, allowList: .dcpMetadata)
        // torch's pickle is a tree but for its strings (each name is read 3
        // times): reading it takes a few steps a byte. More means objects
        // shared over and over, which would make a small file a huge result.
        var objects = DCPPickledObjects(heap: heap, file: file, budget: 16 * bytes.count + (1 << 16))
        let metadata = try objects.metadata(root)
        try metadata.check(file: file)
        return metadata
    }
}

/// The unpickled objects, read as DCP's dataclasses. The schema's depth is
/// fixed, so the walk never recurses on the input's shape; a shared object
/// is walked each time it is met, so every value, dimension and string byte
/// read is counted against `budget`.
private struct DCPPickledObjects {
    let heap: PickleHeap
    let file: String
    var budget: Int

    func fail(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }

    mutating func metadata(_ root: PickleSlot) throws(ShardFSError) -> DCPMetadata {
        let f = try fields(root, .metadata, "the pickle", required: ["state_dict_metadata"],
                           optional: ["planner_data", "storage_data", "storage_meta", "version"])
        var entries: [(fqn: String, entry: DCPMetadata.Entry)] = []
        let items = try dict(f["state_dict_metadata"], "state_dict_metadata")
        entries.reserveCapacity(items.count / 2)
        for i in stride(from: 0, to: items.count, by: 2) {
            let fqn = try string(items[i], "a key of state_dict_metadata")
            entries.append((fqn, try entry(items[i + 1], fqn: fqn)))
        }
        var plannerData: [(fqn: String, path: [String])] = []
        if let planner = f["planner_data"], !isNone(planner) {
            let items = try dict(planner, "planner_data")
            plannerData.reserveCapacity(items.count / 2)
            for i in stride(from: 0, to: items.count, by: 2) {
                let fqn = try string(items[i], "a key of planner_data")
                plannerData.append((fqn, try path(items[i + 1], fqn: fqn)))
            }
        }
        var locations: [DCPMetadata.Location] = []
        if let storage = f["storage_data"], !isNone(storage) {
            let items = try dict(storage, "storage_data")
            locations.reserveCapacity(items.count / 2)
            for i in stride(from: 0, to: items.count, by: 2) { locations.append(try location(items[i], items[i + 1])) }
        }
        return DCPMetadata(entries: entries, plannerData: plannerData, locations: locations,
                           saveID: try saveID(f["storage_meta"]),
                           version: try ifPresent(f["version"]) { s throws(ShardFSError) in try string(s, "version") })
    }

    // MARK: The dataclasses

    /// A state_dict_metadata value.
    private mutating func entry(_ slot: PickleSlot, fqn: String) throws(ShardFSError) -> DCPMetadata.Entry {
        let at = "state_dict_metadata[\(fqn)]"
        if case .object(let i) = slot, case .instance(.bytesStorageMetadata, _) = heap.kinds[i] {
            _ = try fields(slot, .bytesStorageMetadata, at, required: [], optional: [])
            return .bytes
        }
        let f = try fields(slot, .tensorStorageMetadata, at, required: ["properties", "size", "chunks"], optional: [])
        let dtype = try properties(f["properties"], fqn: fqn)
        let size = try torchSize(f["size"], "\(at).size")
        let list = try elements(f["chunks"], .list, "\(at).chunks")
        var chunks: [DCPMetadata.Chunk] = []
        chunks.reserveCapacity(list.count)
        for (n, element) in list.enumerated() {
            let c = try fields(element, .chunkStorageMetadata, "\(at).chunks[\(n)]", required: ["offsets", "sizes"], optional: [])
            chunks.append(DCPMetadata.Chunk(offsets: try torchSize(c["offsets"], "\(at).chunks[\(n)].offsets"),
                                            sizes: try torchSize(c["sizes"], "\(at).chunks[\(n)].sizes")))
        }
        return .tensor(DCPMetadata.TensorEntry(dtype: dtype, size: size, chunks: chunks))
    }

    /// TensorProperties' `__getstate__` tuple: (dtype, layout, requires_grad,
    /// memory-format encoding, pin_memory). Strided and contiguous, as DCP
    /// saves every tensor; requires_grad and pin_memory say nothing about the
    /// bytes (True for a Parameter saved as it is) and are not kept.
    private mutating func properties(_ slot: PickleSlot?, fqn: String) throws(ShardFSError) -> DType {
        let at = "state_dict_metadata[\(fqn)].properties"
        let (_, stateSlot) = try instance(slot, .tensorProperties, at)
        guard let stateSlot else { throw fail("\(at): a TensorProperties without state") }
        let state = try elements(stateSlot, .tuple, "\(at)'s state")
        guard state.count == 5 else { throw fail("\(at): a state of \(state.count) values, not (dtype, layout, requires_grad, memory_format, pin_memory)") }
        let dtype: DType
        switch state[0] {
        case .dtype(let d): dtype = d
        case .global(.otherDType(let name)):
            throw fail("tensor \(fqn) has dtype torch.\(name): ShardFS reads floating-point tensors only (\(PickleMachine.floatDTypes))")
        default: throw fail("\(at): the dtype is \(heap.kindName(state[0])), not a torch dtype")
        }
        let layout = try instance(state[1], .getLayout, "\(at): the layout").arguments
        guard layout.count == 1, case .string(let name) = layout[0] else { throw fail("\(at): the layout is not _get_layout(name)") }
        guard name == "torch.strided" else { throw fail("tensor \(fqn) has layout \(name): ShardFS reads strided tensors only") }
        let encoding = try instance(state[3], .memoryFormatEncoding, "\(at): the memory format").arguments
        guard encoding.count == 1, case .int(let format) = encoding[0] else { throw fail("\(at): the memory format is not _MEM_FORMAT_ENCODING(n)") }
        guard format == 0 else {
            throw fail("tensor \(fqn) has memory format encoding \(format), not 0 (torch.contiguous_format, as DCP saves every tensor)")
        }
        for (i, name) in [(2, "requires_grad"), (4, "pin_memory")] {
            guard case .bool = state[i] else { throw fail("\(at): \(name) is \(heap.kindName(state[i])), not a bool") }
        }
        return dtype
    }

    /// A planner_data value: the entry's path in the nested state dict.
    private mutating func path(_ slot: PickleSlot, fqn: String) throws(ShardFSError) -> [String] {
        let at = "planner_data[\(fqn)]"
        return try elements(slot, .tuple, at).map { (part: PickleSlot) throws(ShardFSError) -> String in
            if case .int(let index) = part {
                throw fail("\(at): the path holds the list index \(index): ShardFS reads state dicts whose containers are all dicts")
            }
            return try string(part, "a part of \(at)")
        }
    }

    /// A storage_data item: MetadataIndex -> _StorageInfo.
    private mutating func location(_ key: PickleSlot, _ value: PickleSlot) throws(ShardFSError) -> DCPMetadata.Location {
        let index = try fields(key, .metadataIndex, "a key of storage_data", required: ["fqn"], optional: ["offset", "index"])
        let fqn = try string(index["fqn"], "a MetadataIndex's fqn")
        let at = "storage_data[\(fqn)]"
        let offsets = try ifPresent(index["offset"]) { s throws(ShardFSError) in try torchSize(s, "\(at): the MetadataIndex's offset") }
        let chunkIndex = try ifPresent(index["index"]) { s throws(ShardFSError) in try int(s, "\(at): the MetadataIndex's index") }
        let info = try fields(value, .storageInfo, at, required: ["relative_path", "offset", "length"], optional: ["transform_descriptors"])
        if let descriptors = info["transform_descriptors"], !isNone(descriptors) {
            let list = try elements(descriptors, .list, "\(at).transform_descriptors", orTuple: true)
            guard list.isEmpty else {
                let names = list.map { (d: PickleSlot) -> String in if case .string(let s) = d { s } else { heap.kindName(d) } }
                throw fail("\(at): the item is stored transformed (transform_descriptors \(names)); ShardFS reads plain items only")
            }
        }
        return DCPMetadata.Location(fqn: fqn, chunkOffsets: offsets, chunkIndex: chunkIndex,
                                    relativePath: try string(info["relative_path"], "\(at).relative_path"),
                                    offset: try int(info["offset"], "\(at).offset"), length: try int(info["length"], "\(at).length"))
    }

    /// storage_meta's save_id (nil without a storage_meta). checkpoint_id
    /// (the folder torch saved to: a string or a PosixPath), load_id and
    /// modules are checked for their type and not kept.
    private mutating func saveID(_ slot: PickleSlot?) throws(ShardFSError) -> String? {
        guard let slot, !isNone(slot) else { return nil }
        let at = "storage_meta"
        let f = try fields(slot, .storageMeta, at, required: [], optional: ["checkpoint_id", "save_id", "load_id", "modules"])
        switch f["checkpoint_id"] {
        case nil, .none?, .string?: break
        case let id?:
            for part in try instance(id, .posixPath, "\(at).checkpoint_id (a string or a PosixPath)").arguments {
                _ = try string(part, "a part of \(at).checkpoint_id")
            }
        }
        _ = try ifPresent(f["load_id"]) { s throws(ShardFSError) in try string(s, "\(at).load_id") }
        if let modules = f["modules"] {
            for module in try elements(modules, .list, "\(at).modules") { _ = try string(module, "an item of \(at).modules") }
        }
        return try ifPresent(f["save_id"]) { s throws(ShardFSError) in try string(s, "\(at).save_id") }
    }

    // MARK: Objects and values

    /// A state dict's fields by name.
    struct Fields {
        var items: [(name: String, value: PickleSlot)] = []
        subscript(_ name: String) -> PickleSlot? { items.first { $0.name == name }?.value }
    }

    /// The arguments and state (nil if never built) of an object of class `c`.
    func instance(_ slot: PickleSlot?, _ c: DCPPickleClass, _ what: String) throws(ShardFSError) -> (arguments: [PickleSlot], state: PickleSlot?) {
        guard let slot else { throw fail("\(what) is missing") }
        guard case .object(let i) = slot, case .instance(let k, let built) = heap.kinds[i], k == c else {
            throw fail("\(what) is \(heap.kindName(slot)), not \(c.kindName)")
        }
        let contents = heap.contents[i]
        return (heap.tuple(contents[0]) ?? [], built ? contents[1] : nil)
    }

    /// A dataclass object's `__dict__` as BUILD gave it: string keys, each
    /// once, every `required` one present and nothing but those and `optional`.
    mutating func fields(_ slot: PickleSlot?, _ c: DCPPickleClass, _ what: String,
                         required: [String], optional: [String]) throws(ShardFSError) -> Fields {
        var f = Fields()
        if let state = try instance(slot, c, what).state {
            let items = try dict(state, "the state of \(what)")
            for i in stride(from: 0, to: items.count, by: 2) {
                let name = try string(items[i], "a field name of \(what)")
                guard required.contains(name) || optional.contains(name) else { throw fail("\(what): \(c.kindName) has no field \(name)") }
                guard f[name] == nil else { throw fail("\(what): the field \(name) is set twice") }
                f.items.append((name, items[i + 1]))
            }
        }
        for name in required where f[name] == nil { throw fail("\(what): \(c.kindName) without its \(name)") }
        return f
    }

    /// A dict's keys and values, alternating.
    mutating func dict(_ slot: PickleSlot?, _ what: String) throws(ShardFSError) -> [PickleSlot] {
        guard let slot, case .object(let i) = slot, case .dict = heap.kinds[i] else {
            throw fail("\(what) is \(slot.map { heap.kindName($0) } ?? "missing"), not a dict")
        }
        return try visit(heap.contents[i])
    }

    enum SequenceKind { case list, tuple }

    /// A list's or tuple's elements.
    mutating func elements(_ slot: PickleSlot?, _ kind: SequenceKind, _ what: String, orTuple: Bool = false) throws(ShardFSError) -> [PickleSlot] {
        if let slot, case .object(let i) = slot {
            switch heap.kinds[i] {
            case .list where kind == .list, .tuple where kind == .tuple || orTuple: return try visit(heap.contents[i])
            default: break
            }
        }
        throw fail("\(what) is \(slot.map { heap.kindName($0) } ?? "missing"), not a \(kind)")
    }

    private mutating func visit(_ values: [PickleSlot]) throws(ShardFSError) -> [PickleSlot] {
        try spend(values.count)
        return values
    }

    private mutating func spend(_ steps: Int) throws(ShardFSError) {
        budget -= steps
        guard budget >= 0 else {
            throw fail("reading the metadata takes more steps than its length allows: objects are shared over and over")
        }
    }

    mutating func string(_ slot: PickleSlot?, _ what: String) throws(ShardFSError) -> String {
        guard let slot, case .string(let s) = slot else { throw fail("\(what) is \(slot.map { heap.kindName($0) } ?? "missing"), not a string") }
        try spend(s.utf8.count)
        return s
    }

    func int(_ slot: PickleSlot?, _ what: String) throws(ShardFSError) -> Int {
        guard let slot, case .int(let v) = slot else { throw fail("\(what) is \(slot.map { heap.kindName($0) } ?? "missing"), not an int") }
        return v
    }

    /// A torch.Size (the machine has checked its dimensions are ints >= 0).
    mutating func torchSize(_ slot: PickleSlot?, _ what: String) throws(ShardFSError) -> [Int] {
        guard let slot, case .size(let dims) = slot else { throw fail("\(what) is \(slot.map { heap.kindName($0) } ?? "missing"), not a torch.Size") }
        try spend(dims.count)
        return dims
    }
}

private func isNone(_ slot: PickleSlot) -> Bool {
    if case .none = slot { return true }
    return false
}

/// `read(slot)`, or nil for None or a missing field.
private func ifPresent<T>(_ slot: PickleSlot?, _ read: (PickleSlot) throws(ShardFSError) -> T) throws(ShardFSError) -> T? {
    guard let slot, !isNone(slot) else { return nil }
    return try read(slot)
}
