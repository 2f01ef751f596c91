/// The items opening a DCP folder reads, gathered first (so that they are
/// read in one parallel pass, `DCPItems.read`) and answered by position.
struct DCPRequests {
    let folder: DCPFolder
    private(set) var requests: [DCPItems.Request] = []

    init(folder: DCPFolder) {
        self.folder = folder
    }

    /// Every chunk of tensor `fqn`, once they are checked to tile it; the
    /// requests' positions.
    mutating func tensor(_ fqn: String, _ t: DCPMetadata.TensorEntry) throws(ShardFSError) -> Range<Int> {
        try DCPChunks.checkCover(t.chunks, size: t.size, fqn: fqn)
        var byOffsets: [[Int]: DCPMetadata.Location] = [:]
        for location in folder.locations[fqn] ?? [] {
            if let offsets = location.chunkOffsets { byOffsets[offsets] = location }
        }
        let first = requests.count
        for (index, chunk) in t.chunks.enumerated() {
            // `.metadata`'s check gave every chunk exactly one location.
            requests.append(.chunk(fqn: fqn, dtype: t.dtype, index: index, chunk: chunk, location: byOffsets[chunk.offsets]!))
        }
        return first..<requests.count
    }

    /// A bytes item's value; the request's position.
    mutating func value(_ fqn: String) -> Int {
        requests.append(.value(fqn: fqn, location: folder.locations[fqn]![0]))
        return requests.count - 1
    }

    /// The element of 0-d tensor `fqn` (stored in one chunk).
    mutating func scalar(_ fqn: String, _ t: DCPMetadata.TensorEntry) -> Int {
        requests.append(.scalar(fqn: fqn, dtype: t.dtype, location: folder.locations[fqn]![0]))
        return requests.count - 1
    }

    /// How refusals name the item of request `i`: its file, fqn and bytes.
    func name(_ i: Int) -> String {
        switch requests[i] {
        case let .chunk(fqn, _, index, _, location): return DCPItems.archiveName(location, fqn, "chunk \(index)")
        case let .value(fqn, location), let .scalar(fqn, _, location): return DCPItems.archiveName(location, fqn, nil)
        }
    }

    /// The tensor `name` (Hugging Face's) from the answers to
    /// `tensor(fqn, t)` at `range`, in Hugging Face's row order
    /// (`permutedHeads`: a TorchTitan wq or wk).
    static func assemble(_ found: [DCPItems.Found], _ range: Range<Int>, t: DCPMetadata.TensorEntry,
                         name: String, permutedHeads: Int?) -> SourceTensor {
        var located: [DCPChunks.Located] = []
        for (chunk, answer) in zip(t.chunks, found[range]) {
            guard case let .chunk(file, offset) = answer else { continue }
            located.append(DCPChunks.Located(offsets: chunk.offsets, sizes: chunk.sizes, file: file, offset: offset))
        }
        let tensor = DCPChunks.tensor(name: name, dtype: t.dtype, shape: t.size, chunks: located)
        return permutedHeads.map { tensor.rotateHalf(heads: $0) } ?? tensor
    }
}
