/// Reads untrusted torch.save files as NxD checkpoints hold them: plain rank
/// files (a dict of tensors) and the xser layout (docs/formats/xser.md: a dict of tensor
/// references, its `.info.pt`, and one file per tensor). Reads the zip
/// structure and `data.pkl` only, never tensor data: every tensor comes back
/// located, its bytes checked to lie inside its storage record.
public enum TorchSaveReader {
    public typealias Read = (_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8]

    /// A torch.save'd dict (plain dict or OrderedDict, values tensors or
    /// Parameters): its tensors, keys in file order.
    public static func stateDict(file: String, fileSize: Int, read: Read) throws(ShardFSError) -> [LocatedTensor] {
        var archive = try TorchSaveArchive(file: file, fileSize: fileSize, read: read)
        var tensors: [LocatedTensor] = []
        for (key, value) in try stringKeyedItems(archive.root, file: file, what: "a dict of tensors") {
            guard case .tensor(let tensor) = value else { throw bad(file, "key \(key): the value is \(value.kindName), not a tensor") }
            tensors.append(try archive.locate(tensor, key: key, name: "tensor \(key)"))
        }
        return tensors
    }

    /// An xser reference dict (the file at a rank file's path): keys in
    /// order with their tid.
    public static func tensorReferences(file: String, fileSize: Int, read: Read) throws(ShardFSError) -> [(key: String, tid: Int)] {
        let archive = try TorchSaveArchive(file: file, fileSize: fileSize, read: read)
        var references: [(key: String, tid: Int)] = []
        for (key, value) in try stringKeyedItems(archive.root, file: file, what: "a dict of TensorReferences") {
            guard case .tensorReference(let tid) = value else {
                throw bad(file, "key \(key): the value is \(value.kindName), not a TensorReference")
            }
            guard let tid else { throw bad(file, "key \(key): a TensorReference without a tid") }
            references.append((key, tid))
        }
        return references
    }

    /// An xser `.info.pt`: tid -> dtype and shape. `expert_model_parallel`
    /// False is ignored; True is refused until expert-parallel is supported.
    public static func tensorInfo(file: String, fileSize: Int, read: Read) throws(ShardFSError) -> [Int: (dtype: DType, shape: [Int])] {
        let archive = try TorchSaveArchive(file: file, fileSize: fileSize, read: read)
        guard case .dict(let items, _) = archive.root else {
            throw bad(file, "data.pkl holds \(archive.root.kindName), not a dict of tensor descriptions")
        }
        var info: [Int: (dtype: DType, shape: [Int])] = [:]
        for item in items {
            guard case .int(let tid) = item.key, tid >= 0 else { throw bad(file, "a key is \(item.key.kindName), not a tid (an int >= 0)") }
            guard info[tid] == nil else { throw bad(file, "tid \(tid) appears twice") }
            info[tid] = try description(item.value, tid: tid, file: file)
        }
        return info
    }

    /// An xser `tensor_<tid>.pt`: the one tensor it holds.
    public static func singleTensor(file: String, fileSize: Int, read: Read) throws(ShardFSError) -> LocatedTensor {
        var archive = try TorchSaveArchive(file: file, fileSize: fileSize, read: read)
        guard case .tensor(let tensor) = archive.root else { throw bad(file, "data.pkl holds \(archive.root.kindName), not a tensor") }
        return try archive.locate(tensor, key: "", name: "the tensor")
    }

    // MARK: Helpers

    private static func bad(_ file: String, _ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }

    /// The items of a dict whose keys are distinct strings.
    private static func stringKeyedItems(_ value: PickleValue, file: String, whose: String = "data.pkl",
                                         what: String) throws(ShardFSError) -> [(String, PickleValue)] {
        guard case .dict(let items, _) = value else { throw bad(file, "\(whose) holds \(value.kindName), not \(what)") }
        var seen: Set<String> = []
        var result: [(String, PickleValue)] = []
        result.reserveCapacity(items.count)
        for item in items {
            guard case .string(let key) = item.key else { throw bad(file, "\(whose): a key is \(item.key.kindName), not a string") }
            guard seen.insert(key).inserted else { throw bad(file, "\(whose): key \(key) appears twice") }
            result.append((key, item.value))
        }
        return result
    }

    /// One `.info.pt` value: `{"dtype": torch.<dtype>, "shape": torch.Size([...]), "expert_model_parallel": False}`.
    private static func description(_ value: PickleValue, tid: Int, file: String) throws(ShardFSError) -> (dtype: DType, shape: [Int]) {
        let at = "tid \(tid)"
        var dtype: DType?, shape: [Int]?
        for (key, field) in try stringKeyedItems(value, file: file, whose: at, what: "a dict") {
            switch (key, field) {
            case ("dtype", .dtype(let d)): dtype = d
            case ("shape", .size(let s)): shape = s
            case ("expert_model_parallel", .bool(false)): break
            case ("expert_model_parallel", .bool(true)): throw bad(file, "\(at): expert_model_parallel is True: expert-parallel not supported yet")
            case ("dtype", _), ("shape", _), ("expert_model_parallel", _):
                throw bad(file, "\(at): \(key) is \(field.kindName)")
            default:
                throw bad(file, "\(at): unexpected field \(key) (an .info.pt entry holds dtype, shape and expert_model_parallel)")
            }
        }
        guard let dtype else { throw bad(file, "\(at): no dtype") }
        guard let shape else { throw bad(file, "\(at): no shape") }
        return (dtype, shape)
    }
}
