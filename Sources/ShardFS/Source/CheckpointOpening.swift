import Foundation

/// How a source directory is read: what only the user can say of it.
public struct SourceOptions: Sendable {
    /// `--config`: a `config.json`, or a directory holding one. An NxD tag
    /// holds none; a Hugging Face model directory has its own.
    public var config: String?
    /// `--source-hw-backend`: the one thing an NxD tag's files cannot tell.
    public var backend: HardwareBackend?

    public init(config: String? = nil, backend: HardwareBackend? = nil) {
        self.config = config
        self.backend = backend
    }
}

extension Checkpoint {
    /// Opens `directory` as what it is: a Hugging Face model (config.json and
    /// safetensors) or an NxD checkpoint tag (`model/` of rank files), whose
    /// Hugging Face tensors are then assembled from the rank files' pieces.
    /// Either way every front end (plan, convert, mount, persist) sees the
    /// same `Checkpoint`.
    public static func open(_ directory: String, options: SourceOptions = SourceOptions()) throws(ShardFSError) -> Checkpoint {
        let isHuggingFace = exists(directory: directory, name: singleFileName) || exists(directory: directory, name: indexName)
        var isDirectory: ObjCBool = false
        let hasModel = FileManager.default.fileExists(atPath: directory + "/model", isDirectory: &isDirectory) && isDirectory.boolValue
        if isHuggingFace || !hasModel {
            if let config = options.config {
                throw ShardFSError.badLayout(flag: "--config", reason: "\(config): \(directory) is a Hugging Face model directory with its own config.json; --config is for NxD checkpoints")
            }
            if let backend = options.backend {
                throw ShardFSError.badLayout(flag: "--source-hw-backend", reason: "\(backend.rawValue): only an NxD checkpoint source has a hardware backend; \(directory) is a Hugging Face model directory")
            }
            return try Checkpoint(directory: directory)
        }
        return try openNxD(tag: directory, options: options)
    }

    /// An NxD tag: config from `--config` (or a `config.json` in the tag),
    /// layout inferred from the rank files.
    static func openNxD(tag: String, options: SourceOptions) throws(ShardFSError) -> Checkpoint {
        let configBytes: [UInt8]
        if let given = options.config {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: given, isDirectory: &isDirectory) else {
                throw ShardFSError.badLayout(flag: "--config", reason: "\(given): no such file or directory")
            }
            configBytes = isDirectory.boolValue
                ? try readSmallFile(directory: given, name: "config.json", limit: 16 << 20)
                : try readConfigFile(given)
        } else if exists(directory: tag, name: "config.json") {
            configBytes = try readSmallFile(directory: tag, name: "config.json", limit: 16 << 20)
        } else {
            throw ShardFSError.badLayout(
                flag: "--config", reason: "missing: \(tag) is an NxD checkpoint, which holds no config.json; pass the model's config.json (or its Hugging Face directory) with --config")
        }
        let config = try ModelConfig(json: configBytes)
        let rankFiles = try NxDRankFiles(tag: tag, config: config)
        let inverse = try InverseLayout(config: config, ranks: rankFiles.ranks, tpSize: rankFiles.tpSize, ppSize: rankFiles.ppSize,
                                        backend: options.backend)
        return Checkpoint(directory: tag, config: config, configBytes: configBytes, files: rankFiles.files,
                          tensors: inverse.tensors, sourceLayout: inverse.options, fingerprints: rankFiles.fingerprints)
    }

    static func readConfigFile(_ path: String) throws(ShardFSError) -> [UInt8] {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let file = try SourceFile(directory: directory.isEmpty ? "/" : directory, name: name)
        guard file.size <= 16 << 20 else { throw ShardFSError.badSource(file: path, reason: "larger than \(16 << 20) bytes") }
        return try file.readBytes(at: 0, count: file.size)
    }
}
