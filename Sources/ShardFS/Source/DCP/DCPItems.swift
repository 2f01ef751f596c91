/// Reads the items of a DCP folder that opening needs, in parallel: each
/// tensor chunk's archive down to where its data is (headers only, never
/// the data), each bytes item's Python value, and the one element of a 0-d
/// tensor (an optimizer's `step`). Every archive is checked to be exactly
/// what DCP saves (docs/formats/dcp.md): a whole torch.save archive at its
/// (offset, length), holding the chunk alone, contiguous, from element 0
/// of a storage of exactly the chunk's bytes, in the entry's dtype.
enum DCPItems {
    enum Request: Sendable {
        /// Chunk `index` of tensor `fqn`.
        case chunk(fqn: String, dtype: DType, index: Int, chunk: DCPMetadata.Chunk, location: DCPMetadata.Location)
        /// A bytes item's value.
        case value(fqn: String, location: DCPMetadata.Location)
        /// A 0-d tensor's element, as a number.
        case scalar(fqn: String, dtype: DType, location: DCPMetadata.Location)
    }

    enum Found: Sendable {
        /// Where the chunk's first element is.
        case chunk(file: Int, offset: Int)
        case value(PickleValue)
        case scalar(Double)
    }

    /// Each request's answer, in order. The first failing request (in
    /// order) is the one reported.
    static func read(_ requests: [Request], folder: DCPFolder) throws(ShardFSError) -> [Found] {
        try WorkerPool.map(items: requests.count, workers: WorkerPool.cores) { (i: Int) throws(ShardFSError) -> Found in
            try read(requests[i], folder: folder)
        }
    }

    static func read(_ request: Request, folder: DCPFolder) throws(ShardFSError) -> Found {
        switch request {
        case let .chunk(fqn, dtype, index, chunk, location):
            let name = archiveName(location, fqn, "chunk \(index)")
            let (file, tensor) = try locate(location, what: "chunk \(index) of \(fqn)", name: name, folder: folder)
            try check(tensor, fqn: fqn, index: index, chunk: chunk, dtype: dtype, file: name)
            return .chunk(file: file, offset: tensor.offset)
        case let .value(fqn, location):
            let (file, offset, length) = try folder.place(location, what: fqn)
            let bytes = try DCPItemBytes(folder.files[file], offset: offset, length: length)
            return .value(try TorchSaveReader.plainValue(file: archiveName(location, fqn, nil), at: offset, length: length, read: bytes.read))
        case let .scalar(fqn, dtype, location):
            let name = archiveName(location, fqn, nil)
            let (file, tensor) = try locate(location, what: fqn, name: name, folder: folder)
            try check(tensor, fqn: fqn, index: 0, chunk: DCPMetadata.Chunk(offsets: [], sizes: []), dtype: dtype, file: name)
            let element = try folder.files[file].readBytes(at: tensor.offset, count: dtype.size)
            return .scalar(scalarValue(dtype, element))
        }
    }

    /// The archive at `location` read down to its one tensor; `what` names
    /// the item when its bytes lie outside its file, `name` the archive.
    private static func locate(_ location: DCPMetadata.Location, what: String, name: String,
                               folder: DCPFolder) throws(ShardFSError) -> (file: Int, tensor: LocatedTensor) {
        let (file, offset, length) = try folder.place(location, what: what)
        let bytes = try DCPItemBytes(folder.files[file], offset: offset, length: length)
        return (file, try TorchSaveReader.singleTensor(file: name, at: offset, length: length, read: bytes.read))
    }

    /// How refusals name an item: its file, the item and its bytes.
    static func archiveName(_ location: DCPMetadata.Location, _ fqn: String, _ part: String?) -> String {
        "\(location.relativePath) (\(fqn)\(part.map { ", \($0)" } ?? ""), bytes \(location.offset)..<\(location.offset + location.length))"
    }

    /// Refuses a chunk's tensor that is not the chunk alone as DCP saves it.
    static func check(_ t: LocatedTensor, fqn: String, index: Int, chunk: DCPMetadata.Chunk, dtype: DType,
                      file: String) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        guard t.dtype == dtype else { throw bad("holds a \(t.dtype) tensor, but .metadata says \(fqn) is \(dtype)") }
        guard t.shape == chunk.sizes else {
            throw bad("holds a tensor of shape \(t.shape), but .metadata says chunk \(index) of \(fqn) is \(chunk.sizes) at \(chunk.offsets)")
        }
        // Row-major; a dimension of size 1 may have any stride.
        var stride = 1
        for d in t.shape.indices.reversed() {
            if t.shape[d] > 1 && t.strides[d] != stride {
                throw bad("holds a tensor with strides \(t.strides), not the contiguous \(contiguousStrides(t.shape)) DCP saves")
            }
            stride = stride &* t.shape[d]
        }
        guard t.offset == t.storage.dataOffset else {
            throw bad("its tensor starts at element \((t.offset - t.storage.dataOffset) / t.dtype.size) of its storage, not 0: DCP saves each chunk alone")
        }
        var bytes = t.dtype.size, overflow = false
        for size in t.shape where !overflow { (bytes, overflow) = bytes.multipliedReportingOverflow(by: size) }
        guard !overflow, t.storage.size == bytes else {
            throw bad("its storage record holds \(t.storage.size) bytes, but the chunk is \(bytes) (\(t.shape) of \(t.dtype)): DCP saves each chunk alone")
        }
    }

    /// A little-endian element of `dtype` as a number (each widens exactly).
    static func scalarValue(_ dtype: DType, _ bytes: [UInt8]) -> Double {
        var bits: UInt64 = 0
        for (i, b) in bytes.prefix(dtype.size).enumerated() { bits |= UInt64(b) << (8 * UInt64(i)) }
        switch dtype {
        case .float32: return Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))
        case .bfloat16: return Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits) << 16))
        case .float16: return Double(Float16(bitPattern: UInt16(truncatingIfNeeded: bits)))
        case .float64: return Double(bitPattern: bits)
        }
    }

    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        for d in shape.indices.dropLast().reversed() { strides[d] = strides[d + 1] &* shape[d + 1] }
        return strides
    }
}
