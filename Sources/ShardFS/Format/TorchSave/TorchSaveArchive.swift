/// One tensor of a torch.save file, located: its bytes are elements of a stored record.
public struct LocatedTensor: Equatable, Sendable {
    /// The state-dict key ("" for a single-tensor file).
    public let key: String
    public let dtype: DType
    public let shape: [Int]
    /// In elements, as pickled (may be column-major, e.g. [1, rows]).
    public let strides: [Int]
    /// Absolute byte offset in the file of the element at index [0, 0, ...]:
    /// `storage.dataOffset + storageOffset * dtype.size`.
    public let offset: Int
    /// The storage record (views of one storage share it).
    public let storage: ZipRecord

    public init(key: String, dtype: DType, shape: [Int], strides: [Int], offset: Int, storage: ZipRecord) {
        self.key = key
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.storage = storage
    }
}

/// A torch.save file opened: its records checked, its archive prefix found,
/// its `data.pkl` unpickled. Reads no storage data.
struct TorchSaveArchive {
    static let maximumPickleLength = 256 << 20

    let file: String
    let directory: ZipDirectory
    /// The archive name every record is under (`x` in `x/data.pkl`).
    let prefix: String
    /// What `data.pkl` unpickles to.
    let root: PickleValue
    /// Storages located so far, by key: views name one storage many times,
    /// and must agree on its dtype and length.
    private var storages: [String: PickledStorage] = [:]

    init(file: String, fileSize: Int, read: (_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        self.file = file
        directory = try ZipDirectory(file: file, fileSize: fileSize, read: read)
        // As torch.load: the archive name is the first record's top folder,
        // and every record is looked up under it.
        guard let first = directory.records.first else { throw bad("the zip archive holds no records") }
        guard let slash = first.name.firstIndex(of: "/"), slash != first.name.startIndex else {
            throw bad("record \(first.name) is not inside an archive folder (torch.save writes <name>/data.pkl, ...)")
        }
        prefix = String(first.name[..<slash])
        let folder = prefix + "/"
        for record in directory.records where !record.name.hasPrefix(folder) {
            throw bad("record \(record.name) is outside the archive folder \(prefix)/ of the other records")
        }
        if let byteorder = directory.record(named: prefix + "/byteorder") {
            let value = byteorder.size <= 16 ? try read(byteorder.dataOffset, byteorder.size) : []
            guard value == Array("little".utf8) else {
                throw bad("record \(byteorder.name) says \"\(String(decoding: value.prefix(16), as: UTF8.self))\": ShardFS reads little-endian files only")
            }
        }
        let pickleName = prefix + "/data.pkl"
        guard let pickle = directory.record(named: pickleName) else { throw bad("no record \(pickleName)") }
        guard pickle.size <= TorchSaveArchive.maximumPickleLength else {
            throw bad("record \(pickleName) takes \(pickle.size) bytes, more than the \(TorchSaveArchive.maximumPickleLength) ShardFS reads")
        }
        do {
            root = try ParsedPickles.parse(try read(pickle.dataOffset, pickle.size), file: file)
        } catch {
            guard case .badSource(_, let reason) = error else { throw error }
            throw bad("record \(pickleName): \(reason)")
        }
    }

    /// Where `tensor`'s elements are: its storage record, checked to hold
    /// exactly the storage's bytes, and its view checked to lie inside it.
    /// `name` says which tensor in errors.
    mutating func locate(_ tensor: PickledTensor, key: String, name: String) throws(ShardFSError) -> LocatedTensor {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: "\(name): \(reason)") }
        let storage = tensor.storage
        let recordName = "\(prefix)/data/\(storage.key)"
        guard let record = directory.record(named: recordName) else { throw bad("its storage record \(recordName) is missing") }
        if let earlier = storages[storage.key], earlier != storage {
            throw bad("storage \(storage.key) is pickled as \(storage.dtype) x \(storage.numel) here but as \(earlier.dtype) x \(earlier.numel) before")
        }
        storages[storage.key] = storage
        let (bytes, overflow) = storage.numel.multipliedReportingOverflow(by: storage.dtype.size)
        guard !overflow, bytes == record.size else {
            throw bad("storage record \(recordName) holds \(record.size) bytes, but the pickle gives it \(storage.numel) elements of \(storage.dtype) (\(overflow ? "too many" : "\(bytes)") bytes)")
        }
        // Built only for a refusal (an optimizer file locates hundreds of tensors).
        func view() -> String { "its view (storage offset \(tensor.storageOffset), shape \(tensor.shape), strides \(tensor.strides))" }
        if tensor.shape.contains(0) {
            guard tensor.storageOffset <= storage.numel else { throw bad("\(view()) starts past the end of storage \(storage.key) (\(storage.numel) elements)") }
        } else {
            // The last element the view reaches: offset + sum((size - 1) * stride).
            var last = tensor.storageOffset
            for (size, stride) in zip(tensor.shape, tensor.strides) {
                let (step, o1) = (size - 1).multipliedReportingOverflow(by: stride)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else { throw bad("\(view()) overflows") }
                last = sum
            }
            guard last < storage.numel else {
                throw bad("\(view()) reaches element \(last) of storage \(storage.key), which holds \(storage.numel)")
            }
        }
        return LocatedTensor(key: key, dtype: storage.dtype, shape: tensor.shape, strides: tensor.strides,
                             offset: record.dataOffset + tensor.storageOffset * storage.dtype.size, storage: record)
    }
}
