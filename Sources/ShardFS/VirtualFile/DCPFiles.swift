/// The files a DCP plan becomes: the one place that turns `DCPPlan` into
/// `(path, PlannedFile)` pairs (beside `PlanFiles.swift`), which convert and
/// mount consume unchanged (docs/formats/dcp.md, "Files").
///
/// A `.distcp` file is `torch.save` archives back to back, one per piece:
/// a tensor chunk saved alone (`torch.save(tensor)`, the archive torch's
/// `FileSystemWriter` writes for each write item), or a Python value. The
/// `.metadata` pickle says where each starts and how long it is; DCP's
/// reader `torch.load`s exactly that byte range.
extension DCPPlan {
    /// Where piece `piece` of file `file` is: its offset and length.
    public struct Placement: Equatable, Sendable {
        public let offset: Int
        public let length: Int
    }

    /// Chunk `chunk` of tensor `t`: what the archive's pickle says of it.
    func description(_ t: Tensor, _ chunk: Int) -> TensorDescription {
        t.shape.isEmpty ? TensorDescription(dtype: t.dtype, shape: [])
            : TensorDescription(dtype: t.dtype, shape: [t.chunks[chunk].count] + t.shape.dropFirst())
    }

    /// Chunk `chunk` of tensor `t`: its bytes, rows of the source.
    func storage(_ t: Tensor, _ chunk: Int) -> [Extent] {
        switch t.source {
        case let .scalar(bytes):
            return [.literal(bytes)]
        case let .rows(source, interleaved):
            let rows = t.chunks[chunk]
            let along = interleaved ? rows.lowerBound / 2..<rows.upperBound / 2 : rows
            let blocks = RowBlock.stacked([RowBlock(whole: source)], along: along, oneDimensional: source.shape.count <= 1)
            return blocks.flatMap { $0.extents(outputDType: t.dtype) }
        }
    }

    /// The `torch.save` archive of one piece. With `sizeOnly`, a tensor's
    /// bytes are zeros of its length: the framing, and so the size, is the
    /// same, and nothing of the source is looked at.
    func archive(item: Int, chunk: Int, sizeOnly: Bool = false) -> VirtualFile {
        let seed = "dcp \(items[item].fqn) \(chunk)"
        switch items[item].value {
        case let .bytes(value):
            var p = PickleWriter()
            p.value(value)
            return TorchSaveFile.file(fileName: "archive", pickle: p.finish(), storages: [],
                                      serializationID: TorchSaveFile.serializationID(seed: seed))
        case let .tensor(t):
            let description = self.description(t, chunk)
            return TorchSaveFile.file(fileName: "archive", pickle: PickleWriter.singleTensor(description),
                                      storages: [sizeOnly ? [.zeros(description.elementCount * description.dtype.size)] : storage(t, chunk)],
                                      serializationID: TorchSaveFile.serializationID(seed: seed))
        }
    }

    /// Each file's pieces' placements, and its size: from the framing alone.
    static func placements(items: [Item], files: [File]) -> [(placements: [Placement], size: Int)] {
        let sizing = DCPPlan(items: items, shards: 1, files: [], placements: [], notes: [])
        // A tensor chunk's archive is as long as any other of its dtype and
        // shape (the archive name and the serialization id have one length;
        // the data, its size): framed once per description, not once per
        // chunk (100,000s of chunks, a few dozen descriptions at 70B).
        var lengths: [TensorDescription: Int] = [:]
        func length(_ piece: (item: Int, chunk: Int)) -> Int {
            guard case let .tensor(t) = items[piece.item].value else {
                return sizing.archive(item: piece.item, chunk: piece.chunk, sizeOnly: true).size
            }
            let description = sizing.description(t, piece.chunk)
            if let known = lengths[description] { return known }
            let framed = sizing.archive(item: piece.item, chunk: piece.chunk, sizeOnly: true).size
            lengths[description] = framed
            return framed
        }
        return files.map { file in
            var offset = 0
            let placements = file.pieces.map { piece -> Placement in
                let length = length(piece)
                defer { offset += length }
                return Placement(offset: offset, length: length)
            }
            return (placements, offset)
        }
    }

    /// The source files piece `piece` reads: the tiles its rows overlap.
    func sourceFiles(item: Int, chunk: Int) -> [Int] {
        guard case let .tensor(t) = items[item].value, case let .rows(source, interleaved) = t.source else { return [] }
        guard !source.tiles.isEmpty else { return [source.fileIndex] }
        let rows = t.chunks[chunk]
        let along = interleaved ? rows.lowerBound / 2..<rows.upperBound / 2 : rows
        let oneDimensional = source.shape.count <= 1
        return source.tiles.filter { (oneDimensional ? $0.columns : $0.rows).overlaps(along) }.map(\.fileIndex)
    }

    /// The `.distcp` file `index`: its archives back to back.
    func distcpFile(_ index: Int) -> VirtualFile {
        // Built archive by archive: a list of every archive's extents beside
        // the file's own took 35 MB for two 64-shard files of a 70B state.
        var file = VirtualFile.Builder()
        var slots: [CRCSlot] = []
        for (piece, placement) in zip(files[index].pieces, placements[index]) {
            let archive = self.archive(item: piece.item, chunk: piece.chunk)
            file.append(contentsOf: archive.extents)
            slots += archive.crcSlots.map { slot in
                CRCSlot(data: slot.data.lowerBound + placement.offset..<slot.data.upperBound + placement.offset,
                        fieldOffsets: slot.fieldOffsets.map { $0 + placement.offset })
            }
        }
        return file.finish(crcSlots: slots)
    }

    /// What `.metadata` says of the folder.
    public var metadata: DCPMetadata {
        var entries: [(fqn: String, entry: DCPMetadata.Entry)] = []
        for item in items {
            switch item.value {
            case .bytes:
                entries.append((item.fqn, .bytes))
            case let .tensor(t):
                let chunks = t.chunks.map { rows in
                    t.shape.isEmpty ? DCPMetadata.Chunk(offsets: [], sizes: [])
                        : DCPMetadata.Chunk(offsets: [rows.lowerBound] + t.shape.dropFirst().map { _ in 0 },
                                            sizes: [rows.count] + t.shape.dropFirst())
                }
                entries.append((item.fqn, .tensor(DCPMetadata.TensorEntry(dtype: t.dtype, size: t.shape, chunks: chunks))))
            }
        }
        var locations: [DCPMetadata.Location] = []
        for (file, placements) in zip(files, placements) {
            for (piece, placement) in zip(file.pieces, placements) {
                let item = items[piece.item]
                var offsets: [Int]?
                if case let .tensor(t) = item.value {
                    offsets = t.shape.isEmpty ? [] : [t.chunks[piece.chunk].lowerBound] + t.shape.dropFirst().map { _ in 0 }
                }
                locations.append(DCPMetadata.Location(fqn: item.fqn, chunkOffsets: offsets, chunkIndex: offsets == nil ? nil : piece.chunk,
                                                      relativePath: file.name, offset: placement.offset, length: placement.length))
            }
        }
        return DCPMetadata(entries: entries, plannerData: items.map { ($0.fqn, $0.path) }, locations: locations,
                           saveID: DCPPlan.saveID(seed: items.map(\.fqn).joined(separator: " ") + " \(shards)"))
    }

    /// A UUID-shaped id derived from `seed` (torch draws one at random).
    static func saveID(seed: String) -> String {
        let digits = Array(TorchSaveFile.serializationID(seed: seed).utf8.prefix(32))
        let hex = digits.map { String(UnicodeScalar($0)) }.joined()
        func part(_ range: Range<Int>) -> String { String(hex.dropFirst(range.lowerBound).prefix(range.count)) }
        return [part(0..<8), part(8..<12), part(12..<16), part(16..<20), part(20..<32)].joined(separator: "-")
    }

    /// What a reader of a `.distcp` file should buffer by: DCP's loader
    /// seeks to each archive and `torch.load`s it, a few small reads of its
    /// zip records and one large read of its data (which a buffered reader
    /// passes straight through). With a megabyte's buffer every small read
    /// fetched a megabyte: 2-process `dcp.load` through the mount read 6.9 GB
    /// for a 4.5 GB state; with 64 KiB 4.7 GB; with 4 KiB 4.5 GB, and loaded
    /// fastest (BENCHMARKS.md).
    static let preferredReadSize = 4096

    /// The `.metadata` file's name: DCP's reader looks for it.
    public static let metadataPath = ".metadata"

    /// The files of `share` (all by default): its `.distcp` files, each a
    /// recipe made when read; `.metadata`, which makes the folder a
    /// checkpoint, only with the whole (it is the folder's completion
    /// marker, as `done` is a tag's), last.
    public func virtualFiles(_ share: Part = .whole) -> [(path: String, file: PlannedFile)] {
        var result: [(path: String, file: PlannedFile)] = share.range(of: files.count).map { index in
            var sources = Set<Int>()
            for piece in files[index].pieces { sources.formUnion(sourceFiles(item: piece.item, chunk: piece.chunk)) }
            let file = PlannedFile(size: placements[index].reduce(0) { $0 + $1.length }, sources: sources.sorted(),
                                   preferredReadSize: DCPPlan.preferredReadSize) { [self] in distcpFile(index) }
            return (files[index].name, file)
        }
        if share == .whole {
            result.append((DCPPlan.metadataPath, PlannedFile(VirtualFile(literals: metadataBytes.pieces))))
        }
        return result
    }
}

/// `.metadata`'s bytes, pickled once per plan (a 70B training state's are
/// tens of megabytes, and a mount asks for its files more than once), in
/// the pieces they were written in: never copied into one array.
public final class DCPMetadataBytes: Sendable {
    public let pieces: [[UInt8]]
    /// Large enough that a read rarely spans two.
    static let pieceSize = 1 << 20

    init(_ pieces: [[UInt8]]) { self.pieces = pieces }
}
