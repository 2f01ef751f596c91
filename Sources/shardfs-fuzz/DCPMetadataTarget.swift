import ShardFS

/// The DCP `.metadata` reader: any input is refused or read. An accepted
/// one keeps the reader's promises (each chunk inside its tensor, each item
/// stored exactly once, ranges non-negative, files inside the folder), and
/// written back by `pickled()` it reads the same. The same machine's tree
/// view runs too, under small limits, walked as PickleTarget walks its own.
enum DCPMetadataTarget {
    static func run(_ input: [UInt8]) {
        if let value = try? PickleReader.parse(input, file: "fuzz.metadata", limits: PickleTarget.smallLimits, allowList: .dcpMetadata) {
            var nodes = 0
            PickleTarget.walk(value, depth: 0, nodes: &nodes)
            invariant(nodes <= PickleTarget.smallLimits.maximumItems, "\(nodes) nodes accepted")
        }
        guard let m = try? DCPMetadata.parse(input, file: "fuzz.metadata") else { return }
        var stored = 0
        for (fqn, entry) in m.entries {
            guard case .tensor(let t) = entry else {
                stored += 1
                continue
            }
            invariant(!t.chunks.isEmpty, "\(fqn): no chunks")
            for chunk in t.chunks {
                invariant(chunk.offsets.count == t.size.count && chunk.sizes.count == t.size.count, "\(fqn): chunk rank")
                for d in t.size.indices {
                    invariant(chunk.offsets[d] >= 0 && chunk.sizes[d] >= 0 && chunk.offsets[d] + chunk.sizes[d] <= t.size[d],
                              "\(fqn): chunk \(chunk) outside \(t.size)")
                }
            }
            stored += t.chunks.count
        }
        invariant(Set(m.entries.map(\.fqn)).count == m.entries.count, "a name appears twice")
        invariant(m.locations.count == stored, "\(m.locations.count) locations for \(stored) stored items")
        for l in m.locations {
            invariant(l.offset >= 0 && l.length >= 0 && l.length <= Int.max - l.offset, "\(l.fqn): range \(l.offset) + \(l.length)")
            invariant(!l.relativePath.isEmpty && !l.relativePath.contains("/") && l.relativePath != "..", "\(l.fqn): path \(l.relativePath)")
        }
        let again = try? DCPMetadata.parse(m.pickled(), file: "fuzz.metadata")
        invariant(again == m, "written back by pickled(), the metadata reads differently")
    }
}
