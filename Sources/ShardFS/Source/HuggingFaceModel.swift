#if canImport(Glibc)
import Glibc
#endif

/// A Hugging Face model directory as a source: `config.json` plus
/// `model.safetensors`, or `model.safetensors.index.json` and its shards,
/// each tensor contiguous in one shard, checked against the index.
extension Checkpoint {
    public static let indexName = "model.safetensors.index.json"
    public static let singleFileName = "model.safetensors"

    public convenience init(directory: String) throws(ShardFSError) {
        var info = stat()
        guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw ShardFSError.badSource(file: directory, reason: "not a model directory (no such directory)")
        }
        let configBytes = try Checkpoint.readSmallFile(directory: directory, name: "config.json", limit: 16 << 20)
        let config = try ModelConfig(json: configBytes)

        let fileNames: [String]
        var weightMap: [(key: String, value: JSONValue)]?
        if Checkpoint.exists(directory: directory, name: Checkpoint.indexName) {
            let indexBytes = try Checkpoint.readSmallFile(directory: directory, name: Checkpoint.indexName, limit: 256 << 20)
            (fileNames, weightMap) = try Checkpoint.parseIndex(indexBytes)
        } else if Checkpoint.exists(directory: directory, name: Checkpoint.singleFileName) {
            fileNames = [Checkpoint.singleFileName]
        } else {
            throw ShardFSError.badSource(
                file: directory, reason: "holds neither \(Checkpoint.singleFileName) nor \(Checkpoint.indexName)")
        }

        var files: [SourceFile] = []
        var tensors: [String: SourceTensor] = [:]
        for (fileIndex, name) in fileNames.enumerated() {
            guard Checkpoint.exists(directory: directory, name: name) else {
                throw ShardFSError.badSource(file: name, reason: "named by \(Checkpoint.indexName) but missing from \(directory)")
            }
            try SourceContainment.check(directory: directory, name: name)
            let file = try SourceFile(directory: directory, name: name)
            let header = try SafetensorsHeader(file: name, fileSize: file.size) { (offset, count) throws(ShardFSError) in
                try file.readBytes(at: offset, count: count)
            }
            for entry in header.entries {
                if let other = tensors[entry.name] {
                    throw ShardFSError.badSource(file: name, reason: "tensor \(entry.name) is also in \(files[other.fileIndex].name)")
                }
                tensors[entry.name] = SourceTensor(name: entry.name, dtype: entry.dtype, shape: entry.shape,
                                                   fileIndex: fileIndex, offset: header.dataStart + entry.begin)
            }
            files.append(file)
        }
        if let weightMap {
            for (tensor, file) in weightMap {
                let fileName = file.stringValue ?? ""
                guard let found = tensors[tensor] else {
                    throw ShardFSError.badSource(file: fileName, reason: "\(Checkpoint.indexName) puts tensor \(tensor) here but the file lacks it")
                }
                guard files[found.fileIndex].name == fileName else {
                    throw ShardFSError.badSource(
                        file: fileName, reason: "\(Checkpoint.indexName) puts tensor \(tensor) here but it is in \(files[found.fileIndex].name)")
                }
            }
            let mapped = Set(weightMap.map(\.key))
            if let stray = tensors.values.filter({ !mapped.contains($0.name) }).map(\.name).sorted().first {
                throw ShardFSError.badSource(
                    file: files[tensors[stray]!.fileIndex].name, reason: "holds tensor \(stray), which \(Checkpoint.indexName) does not list")
            }
        }
        self.init(directory: directory, config: config, configBytes: configBytes, files: files, tensors: tensors,
                  sourceLayout: nil, fingerprints: nil)
    }

    /// The shard names (sorted, each once) and the weight map of an index
    /// file's bytes. A name that could leave the model directory is refused.
    public static func parseIndex(_ indexBytes: [UInt8]) throws(ShardFSError) -> (fileNames: [String], weightMap: [(key: String, value: JSONValue)]) {
        let index: JSONValue
        do { index = try JSONReader.parse(indexBytes) } catch {
            throw ShardFSError.badSource(file: Checkpoint.indexName, reason: "not valid JSON: \(error)")
        }
        guard case let .object(map)? = index["weight_map"] else {
            throw ShardFSError.badSource(file: Checkpoint.indexName, reason: "no \"weight_map\" object")
        }
        var names = Set<String>()
        for (tensor, file) in map {
            guard let fileName = file.stringValue else {
                throw ShardFSError.badSource(file: Checkpoint.indexName, reason: "weight_map entry for \(tensor) is not a file name")
            }
            try Checkpoint.checkShardName(fileName, tensor: tensor)
            names.insert(fileName)
        }
        return (names.sorted(), map)
    }

    /// Shard names must stay inside the model directory: no separators, no `..`.
    static func checkShardName(_ name: String, tensor: String) throws(ShardFSError) {
        // Bytes, not Characters: "/" or NUL followed by a combining mark is one
        // Character that `contains("/")` does not find, but the kernel sees the byte.
        if name.isEmpty || name.utf8.contains(UInt8(ascii: "/")) || name == "." || name == ".." || name.utf8.contains(0) {
            throw ShardFSError.badSource(
                file: Checkpoint.indexName, reason: "weight_map names \"\(name)\" for \(tensor): shard names must be plain file names inside the model directory")
        }
    }

    static func exists(directory: String, name: String) -> Bool {
        var info = stat()
        return stat(directory + "/" + name, &info) == 0
    }

    static func readSmallFile(directory: String, name: String, limit: Int) throws(ShardFSError) -> [UInt8] {
        guard exists(directory: directory, name: name) else {
            throw ShardFSError.badSource(file: name, reason: "missing from \(directory)")
        }
        try SourceContainment.check(directory: directory, name: name)
        let file = try SourceFile(directory: directory, name: name)
        guard file.size <= limit else { throw ShardFSError.badSource(file: name, reason: "larger than \(limit) bytes") }
        return try file.readBytes(at: 0, count: file.size)
    }
}
