/// The fields of a Hugging Face `config.json` that decide the layout
/// (docs/formats/nxd-layout.md, "Inputs").
public struct ModelConfig: Equatable, Sendable {
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM"]

    public var architecture: String
    public var layers: Int
    public var hidden: Int
    public var heads: Int
    public var kvHeads: Int
    public var intermediate: Int
    public var vocab: Int
    public var headDim: Int
    /// True when `config.json` set `head_dim` itself (it may then differ from hidden / heads).
    public var headDimIsExplicit: Bool
    public var tieWordEmbeddings: Bool
    /// `torch_dtype` (or `dtype`), when present.
    public var dtype: DType?

    public init(architecture: String = "LlamaForCausalLM", layers: Int, hidden: Int, heads: Int, kvHeads: Int,
                intermediate: Int, vocab: Int, headDim: Int? = nil, tieWordEmbeddings: Bool = false, dtype: DType? = nil) {
        self.architecture = architecture
        self.layers = layers
        self.hidden = hidden
        self.heads = heads
        self.kvHeads = kvHeads
        self.intermediate = intermediate
        self.vocab = vocab
        self.headDim = headDim ?? (heads > 0 ? hidden / heads : 0)
        self.headDimIsExplicit = headDim != nil
        self.tieWordEmbeddings = tieWordEmbeddings
        self.dtype = dtype
    }

    /// Parses `config.json` bytes.
    public init(json bytes: [UInt8]) throws(ShardFSError) {
        let json: JSONValue
        do { json = try JSONReader.parse(bytes) } catch {
            throw ShardFSError.badConfig(field: "(file)", reason: "not valid JSON: \(error)")
        }
        guard case .object = json else { throw ShardFSError.badConfig(field: "(file)", reason: "not a JSON object") }

        guard case let .array(architectures)? = json["architectures"], !architectures.isEmpty else {
            throw ShardFSError.badConfig(field: "architectures", reason: "missing; ShardFS needs one of \(ModelConfig.supportedArchitectures.joined(separator: ", "))")
        }
        let names = architectures.compactMap(\.stringValue)
        guard let architecture = names.first(where: ModelConfig.supportedArchitectures.contains) else {
            throw ShardFSError.badConfig(
                field: "architectures",
                reason: "unsupported architecture \(names.joined(separator: ", ")); ShardFS supports \(ModelConfig.supportedArchitectures.joined(separator: ", "))")
        }

        func positive(_ field: String) throws(ShardFSError) -> Int {
            guard let value = json[field] else { throw ShardFSError.badConfig(field: field, reason: "missing") }
            guard let int = value.intValue, int > 0 else {
                throw ShardFSError.badConfig(field: field, reason: "must be a positive integer, not \(value.kindName)")
            }
            return int
        }
        let layers = try positive("num_hidden_layers")
        let hidden = try positive("hidden_size")
        let heads = try positive("num_attention_heads")
        // transformers falls back to MHA when num_key_value_heads is absent.
        var kvHeads = heads
        if let value = json["num_key_value_heads"], value != .null { kvHeads = try positive("num_key_value_heads") }
        let intermediate = try positive("intermediate_size")
        let vocab = try positive("vocab_size")
        var headDim: Int?
        if let value = json["head_dim"], value != .null { headDim = try positive("head_dim") }
        if headDim == nil, hidden % heads != 0 {
            throw ShardFSError.badConfig(field: "hidden_size", reason: "\(hidden) is not a multiple of num_attention_heads (\(heads)) and no head_dim is given")
        }
        guard heads % kvHeads == 0 else {
            throw ShardFSError.badConfig(field: "num_key_value_heads", reason: "\(kvHeads) does not divide num_attention_heads (\(heads))")
        }
        var tie = false
        if let value = json["tie_word_embeddings"], value != .null {
            guard let b = value.boolValue else { throw ShardFSError.badConfig(field: "tie_word_embeddings", reason: "must be true or false") }
            tie = b
        }
        var dtype: DType?
        for field in ["torch_dtype", "dtype"] {
            guard let value = json[field], value != .null else { continue }
            guard let name = value.stringValue, let parsed = DType(torchName: name) else {
                throw ShardFSError.badConfig(field: field, reason: "unsupported dtype \(value); ShardFS reads bfloat16, float16, float32, float64")
            }
            dtype = parsed
            break
        }
        self.init(architecture: architecture, layers: layers, hidden: hidden, heads: heads, kvHeads: kvHeads,
                  intermediate: intermediate, vocab: vocab, headDim: headDim, tieWordEmbeddings: tie, dtype: dtype)
    }
}
