/// What one verifying thread works with: a reader of the source (the
/// expected side), its chunk buffers, and what the layout says.
final class CheckContext {
    let tag: String
    let config: ModelConfig
    let layout: LayoutOptions
    let expectedReader: ExtentReader
    let buffers: ComparisonBuffers
    /// Told of every chunk of tensor bytes compared.
    let progress: (Int) -> Void

    init(tag: String, checkpoint: Checkpoint, layout: LayoutOptions, chunkBytes: Int, progress: @escaping (Int) -> Void) {
        self.tag = tag
        config = checkpoint.config
        self.layout = layout
        expectedReader = ExtentReader(sources: checkpoint.files)
        buffers = ComparisonBuffers(chunkBytes: chunkBytes)
        self.progress = progress
    }

    /// A stream reader of a virtual file through `reader`.
    static func stream(_ file: VirtualFile, _ reader: ExtentReader) -> StreamComparison.Read {
        { (range, buffer) throws(ShardFSError) in
            let count = try reader.read(file, at: range.lowerBound, into: buffer)
            guard count == buffer.count else {
                throw ShardFSError.badSource(file: "(tensor)", reason: "read \(count) of \(buffer.count) bytes")
            }
        }
    }

    /// Opens a file of the tag (under the budget of open files, like a source).
    func open(_ path: String) throws(ShardFSError) -> SourceFile {
        try SourceFile(directory: tag, name: path)
    }

    /// A torch.save file of the tag, opened, with its zip directory read.
    struct Archive {
        let path: String
        let file: SourceFile
        let directory: ZipDirectory

        func read(_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8] { try file.readBytes(at: offset, count: count) }
    }

    func openArchive(_ path: String) throws(ShardFSError) -> Archive {
        let file = try open(path)
        let directory = try ZipDirectory(file: path, fileSize: file.size) { (offset, count) throws(ShardFSError) in
            try file.readBytes(at: offset, count: count)
        }
        return Archive(path: path, file: file, directory: directory)
    }

    /// The verdict on the tag's file `path`: missing, or what `check` finds,
    /// or unreadable with the error `check` threw.
    func verdict(_ path: String, _ check: () throws(ShardFSError) -> FileVerdict) -> FileVerdict {
        guard CheckContext.exists(tag + "/" + path) else { return .missing(path) }
        do throws(ShardFSError) {
            return try check()
        } catch {
            return FileVerdict(path: path, status: .unreadable,
                               problems: [VerifyProblem(.unreadable, file: path, CheckContext.reason(error, file: path))])
        }
    }

    /// The CRC-32 of every record of `directory` whose CRC field is not 0
    /// (0: none was recorded) and that is not in `done`, against its field.
    func crcProblems(_ directory: ZipDirectory, of file: SourceFile, path: String, done: Set<String>,
                     keys: [String: String]) throws(ShardFSError) -> [VerifyProblem] {
        var problems: [VerifyProblem] = []
        for record in directory.records where record.crc32 != 0 && !done.contains(record.name) {
            let crc = try StreamComparison.crc(of: record.dataOffset..<record.dataOffset + record.size, buffers: buffers) {
                (offset, chunk) throws(ShardFSError) in try file.read(at: offset, into: chunk)
            }
            if crc != record.crc32 {
                problems.append(CheckContext.crcProblem(record: record, computed: crc, path: path, key: keys[record.name]))
            }
        }
        return problems
    }

    static func crcProblem(record: ZipRecord, computed: UInt32, path: String, key: String?) -> VerifyProblem {
        func hex(_ v: UInt32) -> String {
            let digits = String(v, radix: 16)
            return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
        }
        let of = key.map { " (\($0.isEmpty ? "the tensor" : "key " + $0))" } ?? ""
        return VerifyProblem(.crcMismatch, file: path, key: key,
                             "record \(record.name)\(of): its CRC-32 field says \(hex(record.crc32)) but its \(record.size) bytes give \(hex(computed)): damaged after it was written")
    }
}
