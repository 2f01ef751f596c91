import ShardFS

/// The shard index parser: any accepted shard name is a plain file name.
enum IndexTarget {
    static func run(_ input: [UInt8]) {
        guard let (fileNames, weightMap) = try? Checkpoint.parseIndex(input) else { return }
        invariant(fileNames == Array(Set(fileNames)).sorted(), "shard names not sorted and unique")
        for name in fileNames {
            invariant(!name.isEmpty && name != "." && name != ".." && !name.utf8.contains(UInt8(ascii: "/")) && !name.utf8.contains(0),
                      "shard name \(name) could leave the model directory")
        }
        invariant(weightMap.allSatisfy { fileNames.contains($0.value.stringValue ?? "") }, "a mapped shard is not listed")
    }
}
