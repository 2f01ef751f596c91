import ShardFS

/// What `plan` shows of a `--format dcp` plan: the folder's files, every
/// entry with where it comes from (names, RoPE permutation, dtype), the
/// optimizer's one param group, and what a resumed run needs.
struct DCPReport: Encodable {
    struct Entry: Encodable {
        let fqn: String
        /// "tensor" or "bytes".
        let kind: String
        let dtype: String?
        let shape: [Int]?
        let chunks: Int?
        /// A bytes entry's value, as Python prints it.
        let value: String?
        let origin: String
    }
    struct File: Encodable {
        let path: String
        let size: Int
    }

    let shards: Int
    let files: [File]
    let entries: [Entry]
    let notes: [String]

    init(_ plan: DCPPlan, sizeOf: (String) -> Int?) {
        shards = plan.shards
        files = plan.virtualFiles().map { File(path: $0.path, size: sizeOf($0.path) ?? $0.file.size) }
        entries = plan.items.map { item in
            switch item.value {
            case let .tensor(t):
                return Entry(fqn: item.fqn, kind: "tensor", dtype: t.dtype.rawValue, shape: t.shape, chunks: t.chunks.count,
                             value: nil, origin: item.origin)
            case let .bytes(value):
                return Entry(fqn: item.fqn, kind: "bytes", dtype: nil, shape: nil, chunks: nil,
                             value: PickleValue.python(value), origin: item.origin)
            }
        }
        notes = plan.notes
    }

    var lines: [String] {
        let total = files.reduce(0) { $0 + $1.size }
        var lines = ["DCP checkpoint (TorchTitan v0.2.2 Llama3, AdamW): \(files.count) files, \(Units.bytes(total)) in all; tensors in row chunks for \(shards) data-parallel ranks (--dcp-shards)"]
        for file in files { lines.append("  \(file.path)  \(file.size) bytes (\(Units.bytes(file.size)))") }
        lines.append("")
        // One param group: every parameter's values are the same, shown once.
        var shownGroupKeys = Set<String>()
        for entry in entries {
            if entry.kind == "tensor" {
                let shape = "[" + (entry.shape ?? []).map(String.init).joined(separator: ", ") + "]"
                lines.append("  \(entry.fqn)  \(entry.dtype ?? "") \(shape) in \(entry.chunks ?? 0) chunk\(entry.chunks == 1 ? "" : "s")  <- \(entry.origin)")
            } else if entry.fqn.hasPrefix("optimizer.param_groups."), let key = entry.fqn.split(separator: ".").last.map(String.init) {
                if shownGroupKeys.insert(key).inserted {
                    lines.append("  optimizer.param_groups.<every parameter>.\(key) = \(entry.value ?? "")  (TorchTitan's one param group)")
                }
            } else {
                lines.append("  \(entry.fqn) = \(entry.value ?? "")  <- \(entry.origin)")
            }
        }
        for note in notes { lines.append("note: \(note)") }
        return lines
    }
}
