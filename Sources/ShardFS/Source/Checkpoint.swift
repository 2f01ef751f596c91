#if canImport(Glibc)
import Glibc
#endif

/// A source, opened and validated: its config, its files, and every
/// Hugging Face tensor located in them. Either a Hugging Face model directory
/// (`HuggingFaceModel.swift`: each tensor contiguous in a safetensors shard)
/// or a trained NxD checkpoint tag (`NxD/`: each tensor in tiles of rank
/// files); `Checkpoint.open` tells them apart. Opening reads headers only,
/// never tensor data, and every front end (plan, convert, mount, persist,
/// verify) works on either alike.
public final class Checkpoint: Sendable {
    public let directory: String
    public let config: ModelConfig
    /// `config.json` as read, byte for byte (`--format hf` writes it back).
    public let configBytes: [UInt8]
    public let files: [SourceFile]
    /// Every tensor of the files, by name.
    public let tensors: [String: SourceTensor]
    /// For an NxD checkpoint, the layout its rank files were written in; nil
    /// for a Hugging Face model.
    public let sourceLayout: LayoutOptions?
    /// For an NxD training tag with ZeRO-1 optimizer state (`optim/`), that
    /// state and the files carried with it; nil otherwise, or when the
    /// source was opened for its weights only.
    public let trainingState: TrainingState?
    /// For an NxD checkpoint, the dtype its model files hold each Hugging
    /// Face tensor in, per tensor (a bf16 run keeps its norms float32), also
    /// when they hold no data and `tensors` are the master weights; nil for
    /// other sources. What a target keeps unless `--dtype` says otherwise
    /// (`LayoutPlan.typedAsTheSource`).
    public let modelDTypes: [String: DType]?
    /// The files' fingerprints when opening computed them (an NxD tag's,
    /// from the bytes its parse read); see `fingerprints()`. Held as each
    /// file's header CRC-32 alone when they are of `files`, in order: the
    /// rest is the file's own (name, size, mtime), and 350,000 fingerprints
    /// of a 70B-count xser tag held whole were 17 MB.
    private let knownFingerprints: Known?

    private enum Known: Sendable {
        case headerCRCs([UInt32])
        case fingerprints([SourceFingerprint])
    }

    /// `fingerprints`: the files', when opening computed them (nil: read on demand).
    init(directory: String, config: ModelConfig, configBytes: [UInt8], files: [SourceFile],
         tensors: [String: SourceTensor], sourceLayout: LayoutOptions?, fingerprints: [SourceFingerprint]?,
         trainingState: TrainingState? = nil, modelDTypes: [String: DType]? = nil) {
        self.directory = directory
        self.config = config
        self.configBytes = configBytes
        self.files = files
        self.tensors = tensors
        self.sourceLayout = sourceLayout
        self.trainingState = trainingState
        self.modelDTypes = modelDTypes
        knownFingerprints = fingerprints.map { fingerprints in
            let ofFiles = fingerprints.count == files.count && zip(fingerprints, files).allSatisfy { fingerprint, file in
                fingerprint == SourceFingerprint(file, headerCRC32: fingerprint.headerCRC32)
            }
            return ofFiles ? .headerCRCs(fingerprints.map(\.headerCRC32)) : .fingerprints(fingerprints)
        }
    }

    /// What identifies each file of `files` (for the manifest of an output
    /// made from them): known from opening, or read now.
    public func fingerprints() throws(ShardFSError) -> [SourceFingerprint] {
        switch knownFingerprints {
        case let .fingerprints(fingerprints)?:
            return fingerprints
        case let .headerCRCs(crcs)?:
            return zip(files, crcs).map { SourceFingerprint($0, headerCRC32: $1) }
        case nil:
            break
        }
        var fingerprints: [SourceFingerprint] = []
        for file in files { fingerprints.append(try SourceFingerprint(file)) }
        return fingerprints
    }
}
