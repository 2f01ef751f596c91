#if canImport(Glibc)
import Glibc
#endif

/// A PyTorch Distributed Checkpoint folder opened (docs/formats/dcp.md):
/// its `.metadata` read and parsed (strictly: `DCPMetadata.parse`), and
/// every `.distcp` file it stores an item in opened, inside the folder.
/// Reads nothing of the items themselves.
struct DCPFolder {
    static let metadataName = ".metadata"
    /// The parser reads pickles of up to 1 GiB (`DCPMetadata.pickleLimits`).
    static let metadataLimit = 1 << 30

    let directory: String
    let metadata: DCPMetadata
    /// `.metadata` first, then the `.distcp` files by name.
    let files: [SourceFile]
    /// Index into `files` by relative path.
    let fileIndex: [String: Int]
    /// By fqn: a bytes item's one location, or a tensor's chunks' locations.
    let locations: [String: [DCPMetadata.Location]]

    init(directory: String) throws(ShardFSError) {
        self.directory = directory
        var containment = try SourceContainment(directory: directory)
        try containment.check(DCPFolder.metadataName)
        let metadataFile = try SourceFile(directory: directory, name: DCPFolder.metadataName)
        guard metadataFile.size <= DCPFolder.metadataLimit else {
            throw ShardFSError.badSource(file: DCPFolder.metadataName, reason: "is \(metadataFile.size) bytes, more than the \(DCPFolder.metadataLimit) ShardFS reads")
        }
        metadata = try DCPMetadata.parse(try metadataFile.readBytes(at: 0, count: metadataFile.size), file: DCPFolder.metadataName)

        var locations: [String: [DCPMetadata.Location]] = [:]
        var itemsIn: [String: (count: Int, first: String)] = [:]
        for location in metadata.locations {
            locations[location.fqn, default: []].append(location)
            itemsIn[location.relativePath, default: (0, location.fqn)].count += 1
        }
        self.locations = locations
        var files = [metadataFile]
        var fileIndex: [String: Int] = [:]
        for name in itemsIn.keys.sorted() {
            // The parser took only plain names of the folder; a symlink out of it is refused here.
            try containment.check(name)
            let (count, first) = itemsIn[name]!
            guard Checkpoint.exists(directory: directory, name: name) else {
                throw ShardFSError.badSource(
                    file: name, reason: "missing from \(directory): \(DCPFolder.metadataName) stores \(first)\(count > 1 ? " and \(count - 1) other items" : "") in it")
            }
            fileIndex[name] = files.count
            files.append(try SourceFile(directory: directory, name: name))
        }
        self.files = files
        self.fileIndex = fileIndex
    }

    /// The file index and byte range of `location`, checked to lie inside
    /// its file (`what` names the item in the refusal).
    func place(_ location: DCPMetadata.Location, what: String) throws(ShardFSError) -> (file: Int, offset: Int, length: Int) {
        let index = fileIndex[location.relativePath]!
        let size = files[index].size
        guard location.offset <= size, location.length <= size - location.offset else {
            throw ShardFSError.badSource(
                file: location.relativePath,
                reason: "is \(size) bytes, but \(DCPFolder.metadataName) stores \(what) at bytes \(location.offset)..<\(location.offset + location.length) of it (truncated, or not the file the metadata was saved with)")
        }
        return (index, location.offset, location.length)
    }
}

/// The bytes of one item of a `.distcp` file (a whole torch.save archive)
/// as a parser asks for them: its first and last `block` bytes read once
/// each (a small item whole, in one read), anything else from the file.
/// Offsets are the file's.
final class DCPItemBytes {
    static let block = 2048

    private let file: SourceFile
    private let headStart: Int
    private let head: [UInt8]
    private let tailStart: Int
    private let tail: [UInt8]

    init(_ file: SourceFile, offset: Int, length: Int) throws(ShardFSError) {
        self.file = file
        headStart = offset
        if length <= 2 * DCPItemBytes.block {
            head = try file.readBytes(at: offset, count: length)
            tailStart = offset + length
            tail = []
        } else {
            head = try file.readBytes(at: offset, count: DCPItemBytes.block)
            tailStart = offset + length - DCPItemBytes.block
            tail = try file.readBytes(at: tailStart, count: DCPItemBytes.block)
        }
    }

    func read(_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8] {
        if offset >= headStart, count <= head.count, offset - headStart <= head.count - count {
            return Array(head[(offset - headStart)..<(offset - headStart + count)])
        }
        if offset >= tailStart, count <= tail.count, offset - tailStart <= tail.count - count {
            return Array(tail[(offset - tailStart)..<(offset - tailStart + count)])
        }
        return try file.readBytes(at: offset, count: count)
    }
}
