/// What a PyTorch Distributed Checkpoint (DCP) folder's `.metadata` says
/// (docs/formats/dcp.md): every state-dict entry, flattened to a dotted
/// name, as a tensor (dtype, global size, the chunks it is stored in) or an
/// opaque bytes item (a `torch.save` of a Python value); where each item's
/// bytes are (file, offset, length); and how the flattened names map back to
/// the nested state dict (`planner_data`). It is torch's
/// `torch.distributed.checkpoint.metadata.Metadata`, as plain values: the
/// writer (`DCPMetadataPickle`) pickles it, the strict reader
/// (`DCPMetadataReader`) rebuilds it from untrusted bytes.
public struct DCPMetadata: Equatable, Sendable {
    /// A stored piece of a tensor: the box `offsets ..< offsets + sizes`.
    public struct Chunk: Equatable, Sendable {
        public let offsets: [Int]
        public let sizes: [Int]

        public init(offsets: [Int], sizes: [Int]) {
            self.offsets = offsets
            self.sizes = sizes
        }
    }

    /// `TensorStorageMetadata`: layout strided, contiguous, no grad, not pinned.
    public struct TensorEntry: Equatable, Sendable {
        public let dtype: DType
        public let size: [Int]
        public let chunks: [Chunk]

        public init(dtype: DType, size: [Int], chunks: [Chunk]) {
            self.dtype = dtype
            self.size = size
            self.chunks = chunks
        }
    }

    public enum Entry: Equatable, Sendable {
        case tensor(TensorEntry)
        /// `BytesStorageMetadata`: a Python value saved by `torch.save`.
        case bytes
    }

    /// `_StorageInfo` under its `MetadataIndex`: for a tensor chunk,
    /// `chunkOffsets` is the chunk's offsets (and `chunkIndex` its position
    /// in the entry's chunks, a hint torch writes); nil for a bytes item.
    public struct Location: Equatable, Sendable {
        public let fqn: String
        public let chunkOffsets: [Int]?
        public let chunkIndex: Int?
        /// The `.distcp` file, relative to the folder.
        public let relativePath: String
        public let offset: Int
        public let length: Int

        public init(fqn: String, chunkOffsets: [Int]?, chunkIndex: Int?, relativePath: String, offset: Int, length: Int) {
            self.fqn = fqn
            self.chunkOffsets = chunkOffsets
            self.chunkIndex = chunkIndex
            self.relativePath = relativePath
            self.offset = offset
            self.length = length
        }
    }

    /// In the order torch wrote them (state-dict order).
    public var entries: [(fqn: String, entry: Entry)]
    /// `planner_data`: each flattened name's path in the nested state dict
    /// (`optimizer.state.x.exp_avg` -> `["optimizer", "state.x.exp_avg"]`).
    public var plannerData: [(fqn: String, path: [String])]
    public var locations: [Location]
    /// `storage_meta.save_id` (torch: a random UUID); nil writes no storage_meta.
    public var saveID: String?
    /// `Metadata.version` ("1.0.0" as torch 2.13 writes it).
    public var version: String?

    public init(entries: [(fqn: String, entry: Entry)], plannerData: [(fqn: String, path: [String])],
                locations: [Location], saveID: String? = nil, version: String? = "1.0.0") {
        self.entries = entries
        self.plannerData = plannerData
        self.locations = locations
        self.saveID = saveID
        self.version = version
    }

    public static func == (a: DCPMetadata, b: DCPMetadata) -> Bool {
        a.entries.elementsEqual(b.entries, by: { $0.fqn == $1.fqn && $0.entry == $1.entry })
            && a.plannerData.elementsEqual(b.plannerData, by: { $0.fqn == $1.fqn && $0.path == $1.path })
            && a.locations == b.locations && a.saveID == b.saveID && a.version == b.version
    }
}
