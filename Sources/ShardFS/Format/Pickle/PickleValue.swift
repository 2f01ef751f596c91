/// A storage as torch.save's persistent id names it:
/// `('storage', <storage class>, key, location, numel)`.
public struct PickledStorage: Equatable, Sendable {
    /// From the storage class (`torch.FloatStorage` -> float32).
    public let dtype: DType
    /// The record `<archive>/data/<key>` holds its bytes.
    public let key: String
    /// The device it was saved from (`cpu`); ignored.
    public let location: String
    /// Its length in elements of `dtype`.
    public let numel: Int

    public init(dtype: DType, key: String, location: String, numel: Int) {
        self.dtype = dtype
        self.key = key
        self.location = location
        self.numel = numel
    }
}

/// A tensor as `torch._utils._rebuild_tensor_v2` (possibly wrapped by
/// `_rebuild_parameter`) would rebuild it: a view of a storage.
public struct PickledTensor: Equatable, Sendable {
    public let storage: PickledStorage
    /// In elements.
    public let storageOffset: Int
    public let shape: [Int]
    /// In elements.
    public let strides: [Int]

    public init(storage: PickledStorage, storageOffset: Int, shape: [Int], strides: [Int]) {
        self.storage = storage
        self.storageOffset = storageOffset
        self.shape = shape
        self.strides = strides
    }
}

/// The callables and classes the reader lets a pickle name (its allow-list),
/// as values: what GLOBAL pushes.
public enum PickleGlobal: Equatable, Sendable, CustomStringConvertible {
    case orderedDict
    case rebuildTensorV2
    case rebuildParameter
    case rebuildParameterWithState
    case storageClass(DType)
    case size
    case tensorReferenceClass
    /// A class or function a DCP `.metadata` pickle names (`PickleAllowList.dcpMetadata`).
    case dcp(DCPPickleClass)
    /// A torch dtype ShardFS does not read (`int64`), let through by the DCP
    /// allow-list so that its reader can refuse it naming the tensor.
    case otherDType(String)

    public var description: String {
        switch self {
        case .orderedDict: return "collections.OrderedDict"
        case .rebuildTensorV2: return "torch._utils._rebuild_tensor_v2"
        case .rebuildParameter: return "torch._utils._rebuild_parameter"
        case .rebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state"
        case .storageClass(let dtype): return "torch.\(dtype.torchStorageClass)"
        case .size: return "torch.Size"
        case .tensorReferenceClass: return "torch_xla.utils.serialization.TensorReference"
        case .dcp(let c): return "\(c.module).\(c.rawValue)"
        case .otherDType(let name): return "torch.\(name)"
        }
    }
}

/// What a `torch.distributed.checkpoint` `.metadata` pickle names: its
/// dataclasses (made by NEWOBJ with no arguments, then BUILD), and the
/// callables its fields are rebuilt with (REDUCE). The raw value is the name.
public enum DCPPickleClass: String, CaseIterable, Sendable {
    case metadata = "Metadata"
    case tensorStorageMetadata = "TensorStorageMetadata"
    case bytesStorageMetadata = "BytesStorageMetadata"
    case chunkStorageMetadata = "ChunkStorageMetadata"
    case tensorProperties = "TensorProperties"
    case metadataIndex = "MetadataIndex"
    case storageMeta = "StorageMeta"
    case storageInfo = "_StorageInfo"
    /// `_MEM_FORMAT_ENCODING(n)`: TensorProperties' memory format, as an enum member.
    case memoryFormatEncoding = "_MEM_FORMAT_ENCODING"
    /// `torch.serialization._get_layout('torch.strided')`: how a `torch.layout` pickles.
    case getLayout = "_get_layout"
    /// `storage_meta.checkpoint_id` when the folder was given as a path.
    case posixPath = "PosixPath"

    public var module: String {
        switch self {
        case .storageInfo: return "torch.distributed.checkpoint.filesystem"
        case .getLayout: return "torch.serialization"
        case .posixPath: return "pathlib"
        default: return "torch.distributed.checkpoint.metadata"
        }
    }

    /// A dataclass (NEWOBJ then BUILD), rather than a callable REDUCE calls.
    public var isDataclass: Bool {
        switch self {
        case .memoryFormatEncoding, .getLayout, .posixPath: return false
        default: return true
        }
    }

    /// What an object of the class is, for messages ("a MetadataIndex").
    public var kindName: String { self == .getLayout ? "a torch.layout" : "a \(rawValue)" }
}

/// What an allow-listed pickle unpickles to: a small tree (its depth and
/// node count bounded by `PickleReader.Limits`).
public indirect enum PickleValue: Equatable, Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case tuple([PickleValue])
    case list([PickleValue])
    /// A dict's items in insertion order; `ordered` for an OrderedDict. A key
    /// set twice appears twice (Python would keep the last value in the first
    /// key's place): readers refuse that rather than guess.
    case dict([Item], ordered: Bool)
    case storage(PickledStorage)
    case tensor(PickledTensor)
    /// A `torch.Size`.
    case size([Int])
    case dtype(DType)
    /// A `torch_xla.utils.serialization.TensorReference`; nil until BUILD gives its tid.
    case tensorReference(tid: Int?)
    case global(PickleGlobal)
    /// An object of an allowed class, as data: what REDUCE or NEWOBJ called
    /// it with, and the state BUILD gave it (nil if none).
    case instance(DCPPickleClass, arguments: [PickleValue], state: PickleValue?)

    public struct Item: Equatable, Sendable {
        public let key: PickleValue
        public let value: PickleValue

        public init(key: PickleValue, value: PickleValue) {
            self.key = key
            self.value = value
        }
    }

    /// What the value is, for messages ("a list", "a tensor").
    public var kindName: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int: return "an int"
        case .float: return "a float"
        case .string: return "a string"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict(_, let ordered): return ordered ? "an OrderedDict" : "a dict"
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        case .size: return "a torch.Size"
        case .dtype: return "a torch.dtype"
        case .tensorReference: return "a TensorReference"
        case .global(let g): return "the global \(g)"
        case .instance(let c, _, _): return c.kindName
        }
    }
}
