/// What a `.metadata` must say to be read at all, whoever wrote it: names
/// unique; every tensor chunk of its tensor's rank, inside it, and stored
/// exactly once; every bytes item stored exactly once; every stored range
/// non-negative and in a plain file of the folder (a name from an untrusted
/// file is about to be opened). Whether a tensor's chunks tile it, without
/// overlap or hole, is for whoever assembles it.
extension DCPMetadata {
    func check(file: String) throws(ShardFSError) {
        func fail(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        struct ChunkKey: Hashable {
            let entry: Int
            let offsets: [Int]
        }
        var entryNumber: [String: Int] = [:]
        entryNumber.reserveCapacity(entries.count)
        // A location finds its chunk by offsets, as torch's reader does.
        var chunkNumber: [ChunkKey: Int] = [:]
        // Per entry, per chunk (one for a bytes item): seen in storage_data.
        var stored: [[Bool]] = []
        stored.reserveCapacity(entries.count)
        for (n, (fqn, entry)) in entries.enumerated() {
            guard entryNumber.updateValue(n, forKey: fqn) == nil else { throw fail("\(fqn) appears twice in state_dict_metadata") }
            guard case .tensor(let t) = entry else {
                stored.append([false])
                continue
            }
            guard t.size.allSatisfy({ $0 >= 0 }) else { throw fail("tensor \(fqn) has the size \(t.size)") }
            guard !t.chunks.isEmpty else { throw fail("tensor \(fqn) has no chunks") }
            for (c, chunk) in t.chunks.enumerated() {
                let at = "tensor \(fqn): chunk \(c) (offsets \(chunk.offsets), sizes \(chunk.sizes))"
                guard chunk.offsets.count == t.size.count, chunk.sizes.count == t.size.count else {
                    throw fail("\(at) is not of the rank of the tensor's size \(t.size)")
                }
                for d in t.size.indices {
                    let offset = chunk.offsets[d], size = chunk.sizes[d]
                    // Written so that nothing can overflow.
                    guard offset >= 0, size >= 0, offset <= t.size[d], size <= t.size[d] - offset else {
                        throw fail("\(at) lies outside the tensor's size \(t.size)")
                    }
                }
                guard chunkNumber.updateValue(c, forKey: ChunkKey(entry: n, offsets: chunk.offsets)) == nil else {
                    throw fail("\(at) starts where an earlier chunk does")
                }
            }
            stored.append(Array(repeating: false, count: t.chunks.count))
        }
        var planned: Set<String> = []
        for (fqn, path) in plannerData {
            guard planned.insert(fqn).inserted else { throw fail("planner_data lists \(fqn) twice") }
            guard entryNumber[fqn] != nil else { throw fail("planner_data lists \(fqn), which state_dict_metadata does not") }
            guard !path.isEmpty else { throw fail("planner_data gives \(fqn) an empty path") }
        }
        for l in locations {
            let at = "storage_data[\(l.fqn)]"
            guard let n = entryNumber[l.fqn] else { throw fail("\(at): state_dict_metadata has no \(l.fqn)") }
            guard l.offset >= 0, l.length >= 0, l.length <= Int.max - l.offset else {
                throw fail("\(at): \(l.length) bytes at offset \(l.offset)")
            }
            let p = l.relativePath
            guard !p.isEmpty, p != ".", p != "..", !p.contains("/"), !p.utf8.contains(0) else {
                throw fail("\(at): the relative path \"\(p)\" is not a file name in the checkpoint folder")
            }
            if let index = l.chunkIndex, index < 0 { throw fail("\(at): the chunk index \(index) is negative") }
            switch entries[n].entry {
            case .bytes:
                guard l.chunkOffsets == nil else { throw fail("\(at): \(l.fqn) is a bytes item, but its location has chunk offsets") }
                guard !stored[n][0] else { throw fail("bytes item \(l.fqn) has two locations in storage_data") }
                stored[n][0] = true
            case .tensor:
                guard let offsets = l.chunkOffsets else { throw fail("\(at): \(l.fqn) is a tensor, but its location has no chunk offsets") }
                guard let c = chunkNumber[ChunkKey(entry: n, offsets: offsets)] else {
                    throw fail("\(at): the location at offsets \(offsets) is of none of the tensor's chunks")
                }
                guard !stored[n][c] else { throw fail("tensor \(l.fqn): chunk \(c) (offsets \(offsets)) has two locations in storage_data") }
                stored[n][c] = true
            }
        }
        for (n, (fqn, entry)) in entries.enumerated() {
            guard let c = stored[n].firstIndex(of: false) else { continue }
            guard case .tensor(let t) = entry else { throw fail("bytes item \(fqn) has no location in storage_data") }
            throw fail("tensor \(fqn): chunk \(c) (offsets \(t.chunks[c].offsets)) has no location in storage_data")
        }
    }
}
