import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// An NxD training tag as a source, end to end: the input is a small archive
/// of files (`config.json`, then rank-file names and bytes: pickled state
/// dicts, xser reference dicts, `.info.pt`, tensor files), unpacked into a
/// fresh directory and opened as `Checkpoint.open` opens a tag, then planned
/// back to Hugging Face. Seeded with real tags `shardfs convert` wrote
/// (fuzz/make_seeds.py), so mutations reach the rank-file names, the
/// pickles and the layout inference, not only the archive framing.
///
/// Archive: repeated `[name length: 1 byte][name][data length: 4 bytes LE][data]`.
/// Names are kept to `[A-Za-z0-9._-]` components under the tag (at most 64
/// files, 16 MiB in all); anything else ends the archive.
enum TagTarget {
    static let maximumFiles = 64

    static func run(_ input: [UInt8]) {
        guard let files = unpack(input), !files.isEmpty else { return }
        var template = Array("/tmp/shardfs-fuzz-tag-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) != nil }) else { return }
        let root = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { remove(root) }
        for (name, data) in files { write(root + "/" + name, data) }
        let config = root + "/config.json"
        let checkpoint: Checkpoint
        do throws(ShardFSError) {
            checkpoint = try Checkpoint.open(root + "/tag", options: SourceOptions(config: config, backend: .trn1))
        } catch {
            return
        }
        // Accepted: every tensor lies in its files, tile by tile.
        for tensor in checkpoint.tensors.values {
            let (rows, columns) = RowBlock.matrixShape(tensor.shape)
            var covered = 0
            for tile in tensor.tiles {
                invariant(tile.fileIndex >= 0 && tile.fileIndex < checkpoint.files.count, "\(tensor.name): tile of file \(tile.fileIndex)")
                invariant(tile.rows.lowerBound >= 0 && tile.rows.upperBound <= rows && tile.columns.lowerBound >= 0 && tile.columns.upperBound <= columns,
                          "\(tensor.name): tile \(tile.rows) x \(tile.columns) outside \(rows) x \(columns)")
                guard !tile.rows.isEmpty, !tile.columns.isEmpty else { continue }
                let size = tensor.dtype.size
                let last = tile.offset + (tile.rows.count - 1) * tile.rowStride + (tile.columns.count - 1) * tile.elementStride + size
                invariant(tile.offset >= 0 && last <= checkpoint.files[tile.fileIndex].size, "\(tensor.name): tile reaches past its file")
                covered += tile.rows.count * tile.columns.count
            }
            invariant(tensor.tiles.isEmpty || covered == rows * columns, "\(tensor.name): tiles cover \(covered) of \(rows * columns)")
        }
        var options = LayoutOptions()
        options.format = .hf
        _ = try? LayoutPlanner.plan(checkpoint: checkpoint, options: options)
        // A training tag's optimizer state, resharded: every shard lies in its files.
        guard checkpoint.trainingState != nil else { return }
        for format in [CheckpointFormat.pt, .xser] {
            var o = LayoutOptions(tpSize: 1, format: format)
            o.dpSize = 3
            guard let plan = try? LayoutPlanner.plan(checkpoint: checkpoint, options: o) else { continue }
            for (path, file) in plan.virtualFiles() {
                for extent in file.make().extents {
                    for index in extent.sourceFileIndexes {
                        invariant(index >= 0 && index < checkpoint.files.count, "\(path): an extent of file \(index)")
                    }
                }
            }
        }
    }

    /// The archive's files, or nil when its framing is broken.
    static func unpack(_ input: [UInt8]) -> [(String, [UInt8])]? {
        var files: [(String, [UInt8])] = []
        var position = 0, total = 0
        while position < input.count, files.count < maximumFiles {
            let nameLength = Int(input[position])
            position += 1
            guard nameLength > 0, position + nameLength + 4 <= input.count else { return files }
            let name = String(decoding: input[position..<position + nameLength], as: UTF8.self)
            position += nameLength
            let length = (0..<4).reduce(0) { $0 | Int(input[position + $1]) << (8 * $1) }
            position += 4
            guard safe(name), length <= input.count - position, total + length <= 16 << 20 else { return files }
            files.append((name, Array(input[position..<position + length])))
            position += length
            total += length
        }
        return files
    }

    /// A relative path of plain components: no `..`, no empty parts.
    static func safe(_ name: String) -> Bool {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.isEmpty && parts.count <= 4 && parts.allSatisfy { part in
            !part.isEmpty && part != "." && part != ".." && part.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2E || byte == 0x5F || byte == 0x2D
            }
        }
    }

    static func write(_ path: String, _ data: [UInt8]) {
        var prefix = ""
        for part in path.split(separator: "/").dropLast() {
            prefix += "/" + part
            mkdir(prefix, 0o700)
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    /// `rm -r` of what `run` made (no symlinks are ever made there).
    static func remove(_ path: String) {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name != "." && name != ".." { remove(path + "/" + name) }
            }
            closedir(directory)
            rmdir(path)
        } else {
            unlink(path)
        }
    }
}
