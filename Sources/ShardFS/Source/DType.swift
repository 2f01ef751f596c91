/// The floating-point element types ShardFS reads and writes, with their
/// names in each of the three vocabularies it speaks: safetensors headers,
/// torch dtypes (config.json, `--dtype`), and torch's pickled storage classes.
public enum DType: String, CaseIterable, Sendable, Codable {
    case bfloat16, float16, float32, float64

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bfloat16, .float16: return 2
        case .float32: return 4
        case .float64: return 8
        }
    }

    /// The dtype string used in safetensors headers.
    public var safetensorsName: String {
        switch self {
        case .bfloat16: return "BF16"
        case .float16: return "F16"
        case .float32: return "F32"
        case .float64: return "F64"
        }
    }

    /// The dtype's attribute of the `torch` module (`torch.bfloat16`), as a
    /// pickled `torch.dtype` names it; the raw values were chosen to match.
    public var torchName: String { rawValue }

    /// The storage class `torch.save` pickles for this dtype (`torch.<name>`).
    public var torchStorageClass: String {
        switch self {
        case .bfloat16: return "BFloat16Storage"
        case .float16: return "HalfStorage"
        case .float32: return "FloatStorage"
        case .float64: return "DoubleStorage"
        }
    }

    public init?(safetensorsName: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == safetensorsName }) else { return nil }
        self = match
    }

    /// Accepts torch's spellings as config.json and users write them
    /// (`bfloat16`, `torch.float32`, `half`, `float`, ...).
    public init?(torchName: String) {
        var name = torchName
        if name.hasPrefix("torch.") { name.removeFirst("torch.".count) }
        switch name {
        case "bfloat16": self = .bfloat16
        case "float16", "half": self = .float16
        case "float32", "float": self = .float32
        case "float64", "double": self = .float64
        default: return nil
        }
    }
}
