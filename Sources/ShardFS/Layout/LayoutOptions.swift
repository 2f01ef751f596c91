/// The Trainium generation a layout is for. It changes only the order of
/// attention heads under `qkvLinear` (docs/formats/nxd-layout.md, "How each tensor is cut").
public enum HardwareBackend: String, CaseIterable, Sendable, Codable {
    case trn1, trn2
}

/// The parameters of an NxD layout, named after the converter's flags.
public struct LayoutOptions: Equatable, Sendable, Codable {
    public var tpSize: Int
    public var ppSize: Int
    public var virtualPPSize: Int
    public var kvSizeMultiplier: Int
    public var qkvLinear: Bool
    public var fuseQKV: Bool
    public var backend: HardwareBackend
    /// Output dtype; nil means the checkpoint's own.
    public var dtype: DType?
    /// The files each rank is written as. Part of the options, so that every
    /// consumer of `LayoutPlan.virtualFiles` (convert, mount, ...) follows it.
    public var format: CheckpointFormat
    /// `--format hf`: the largest safetensors file, in bytes (transformers'
    /// `max_shard_size`).
    public var maxShardSize: Int = LayoutOptions.defaultMaxShardSize
    /// The data-parallel size of the optimizer files (a training tag's
    /// ZeRO-1 state); nil for weights, which do not depend on it. A plan
    /// sets it when it has optimizer files.
    public var dpSize: Int?
    /// `--format dcp`: the data-parallel ranks each tensor is cut into row
    /// chunks for (nil: `LayoutPlanner.defaultDCPShards`).
    public var dcpShards: Int?

    /// "5GB", in huggingface_hub's units.
    public static let defaultMaxShardSize = 5_000_000_000

    public init(tpSize: Int = 1, ppSize: Int = 1, virtualPPSize: Int = 1, kvSizeMultiplier: Int = 1,
                qkvLinear: Bool = false, fuseQKV: Bool = false, backend: HardwareBackend = .trn1, dtype: DType? = nil,
                format: CheckpointFormat = .pt) {
        self.tpSize = tpSize
        self.ppSize = ppSize
        self.virtualPPSize = virtualPPSize
        self.kvSizeMultiplier = kvSizeMultiplier
        self.qkvLinear = qkvLinear
        self.fuseQKV = fuseQKV
        self.backend = backend
        self.dtype = dtype
        self.format = format
    }

    /// A one-line description, used in logs and to derive serialization ids
    /// (the pt format adds nothing, so pt files keep the ids they always had).
    public var summary: String {
        var parts = ["tp=\(tpSize)", "pp=\(ppSize)", "vpp=\(virtualPPSize)", "kv_mult=\(kvSizeMultiplier)"]
        if qkvLinear { parts.append("qkv_linear") }
        if fuseQKV { parts.append("fuse_qkv") }
        parts.append(backend.rawValue)
        parts.append(dtype?.rawValue ?? "source-dtype")
        if format == .hf {
            // Only the dtype and the shard size decide a Hugging Face checkpoint's files.
            return ["hf", dtype?.rawValue ?? "source-dtype", "max_shard_size=\(maxShardSize)"].joined(separator: " ")
        }
        if format == .dcp {
            // Only the dtype and the chunking decide a DCP folder's files.
            return ["dcp", dtype?.rawValue ?? "float32", "shards=\(dcpShards ?? LayoutPlanner.defaultDCPShards)"].joined(separator: " ")
        }
        if format != .pt { parts.append(format.rawValue) }
        if let dpSize { parts.append("dp=\(dpSize)") }
        return parts.joined(separator: " ")
    }

    /// Refuses a flag that does not apply to the format, by name: the NxD
    /// layout flags with a Hugging Face or DCP output (no NxD layout), and
    /// each format's own flags with another.
    public func checkApplicable() throws(ShardFSError) {
        if format == .hf || format == .dcp {
            let layoutFlags = [("--tp-size", tpSize != 1), ("--pp-size", ppSize != 1), ("--virtual-pp-size", virtualPPSize != 1),
                               ("--kv-size-multiplier", kvSizeMultiplier != 1), ("--qkv-linear", qkvLinear), ("--fuse-qkv", fuseQKV),
                               ("--hw-backend", backend != .trn1)]
            if let (flag, _) = layoutFlags.first(where: { $0.1 }) {
                let what = format == .hf ? "a Hugging Face checkpoint" : "a DCP checkpoint"
                throw ShardFSError.badLayout(
                    flag: flag, reason: "does not apply to --format \(format.rawValue): \(what) has no NxD layout (an NxD source's own layout is read from its files)")
            }
        }
        if format != .hf && maxShardSize != LayoutOptions.defaultMaxShardSize {
            throw ShardFSError.badLayout(flag: "--max-shard-size", reason: "applies to --format hf only")
        }
        if format != .dcp && dcpShards != nil {
            throw ShardFSError.badLayout(flag: "--dcp-shards", reason: "applies to --format dcp only")
        }
    }
}
