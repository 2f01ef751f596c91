/// One tensor of a Hugging Face checkpoint being written: its bytes are
/// `storage`, row-major, in `dtype`.
public struct HFTensor: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let storage: [Extent]

    /// `storage` must hold exactly the tensor's bytes (elements × dtype size):
    /// the header states that length, so any other would make a corrupt file.
    public init(name: String, dtype: DType, shape: [Int], storage: [Extent]) {
        let byteCount = storage.reduce(0) { $0 + $1.byteCount }
        precondition(byteCount == shape.reduce(dtype.size, *),
                     "tensor \(name): storage holds \(byteCount) bytes, not the \(shape.reduce(dtype.size, *)) of \(dtype) \(shape)")
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { shape.reduce(dtype.size, *) }
}

/// A safetensors file as the `safetensors` library (0.8.0, its Rust
/// `serialize`) writes it: an 8-byte little-endian header length N, N bytes
/// of compact JSON padded with spaces, then the tensors' bytes back to back.
public enum SafetensorsFile {
    /// Exactly the bytes `safetensors.torch.save_file(tensors, path,
    /// metadata: metadata)` writes, with `metadata == nil` for no metadata
    /// (`metadata=None`: no `__metadata__` key) and `[]` for `{}` (written as
    /// `"__metadata__":{}`). Tensors may come in any order (state-dict order,
    /// say); the library sorts them (`dataOrder`). Names must be distinct, as
    /// a Python dict's keys are.
    ///
    /// The library keeps metadata in a Rust HashMap, so with two or more
    /// entries their order in the header changes from run to run; this writes
    /// them in the order given, which is one of the orders it can produce.
    public static func file(_ tensors: [HFTensor], metadata: [(String, String)]?) -> VirtualFile {
        let ordered = dataOrder(tensors)
        let header = headerBytes(ordered, metadata: metadata)
        var extents: [Extent] = [.literal(littleEndian64(header.count) + header)]
        for tensor in ordered { extents += tensor.storage }
        return VirtualFile(extents: extents)
    }

    /// The order the library lays tensors out in, header and data alike: by
    /// dtype, larger first in its own dtype order (F64, F32, BF16, F16: the
    /// descending order of its Rust `Dtype` enum, so BF16 before F16 though
    /// both take 2 bytes), then by name, comparing UTF-8 bytes (Rust's `str`
    /// order; not Swift's `String` order). Larger elements first keeps each
    /// tensor aligned to its element size with no padding between tensors.
    public static func dataOrder(_ tensors: [HFTensor]) -> [HFTensor] {
        let names = Set(tensors.map(\.name))
        precondition(names.count == tensors.count, "safetensors tensor names must be distinct")
        return tensors.sorted { a, b in
            if a.dtype != b.dtype { return a.dtype.safetensorsRank > b.dtype.safetensorsRank }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
    }

    /// The header JSON, padded. serde_json's compact form (no spaces):
    /// `{"__metadata__":{...},"name":{"dtype":"F32","shape":[2,3],
    /// "data_offsets":[begin,end]},...}`, metadata first when present, then
    /// the tensors in data order, offsets relative to the data region; a
    /// 0-element tensor gets an empty range (`[x,x]`), a scalar `"shape":[]`.
    /// The library pads the JSON with spaces to a multiple of 8 bytes so the
    /// data region starts 8-aligned (8 + N).
    static func headerBytes(_ ordered: [HFTensor], metadata: [(String, String)]?) -> [UInt8] {
        var members: [[UInt8]] = []
        if let metadata {
            let entries = metadata.map { JSONText.serde($0.0) + [UInt8(ascii: ":")] + JSONText.serde($0.1) }
            members.append(JSONText.serde("__metadata__") + Array(":{".utf8) + joined(entries) + [UInt8(ascii: "}")])
        }
        var offset = 0
        for tensor in ordered {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            let end = offset + tensor.byteCount
            let body = "{\"dtype\":\"\(tensor.dtype.safetensorsName)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}"
            members.append(JSONText.serde(tensor.name) + [UInt8(ascii: ":")] + Array(body.utf8))
            offset = end
        }
        var json = [UInt8(ascii: "{")] + joined(members) + [UInt8(ascii: "}")]
        json += [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8)
        return json
    }

    private static func joined(_ parts: [[UInt8]]) -> [UInt8] {
        Array(parts.joined(separator: [UInt8(ascii: ",")]))
    }

    private static func littleEndian64(_ value: Int) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: UInt64(value) >> (8 * UInt64($0))) }
    }
}

extension DType {
    /// The position of this dtype in the safetensors library's Rust `Dtype`
    /// enum (`... F16, BF16, ..., F32, ..., F64, ...`), which it sorts tensors
    /// by, descending. Only the relative order matters.
    var safetensorsRank: Int {
        switch self {
        case .float16: return 0
        case .bfloat16: return 1
        case .float32: return 2
        case .float64: return 3
        }
    }
}
