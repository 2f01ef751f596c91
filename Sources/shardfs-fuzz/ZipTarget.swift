import ShardFS

/// The zip directory reader, on the input as a whole file: an accepted
/// directory's records lie inside the file, each after its local header,
/// apart from one another, under distinct names.
enum ZipTarget {
    static func run(_ input: [UInt8]) {
        guard let directory = try? ZipDirectory(file: "fuzz.pt", fileSize: input.count, read: boundedReader(input)) else { return }
        var names: Set<String> = []
        for record in directory.records {
            invariant(names.insert(record.name).inserted, "record \(record.name) listed twice")
            invariant(directory.record(named: record.name) == record, "record(named: \(record.name)) finds another record")
            invariant(record.localHeaderOffset >= 0 && record.dataOffset >= record.localHeaderOffset + 30 + record.name.utf8.count,
                      "\(record.name): data at \(record.dataOffset) inside its local header at \(record.localHeaderOffset)")
            invariant(record.size >= 0 && record.dataOffset <= input.count - record.size,
                      "\(record.name): data \(record.dataOffset) + \(record.size) outside a \(input.count)-byte file")
        }
        let byOffset = directory.records.sorted { $0.localHeaderOffset < $1.localHeaderOffset }
        for (a, b) in zip(byOffset, byOffset.dropFirst()) {
            invariant(a.dataOffset + a.size <= b.localHeaderOffset, "records \(a.name) and \(b.name) overlap")
        }
    }
}

/// A read closure over the input that fails the run when asked for bytes
/// outside it: the readers must check bounds before they read.
func boundedReader(_ input: [UInt8]) -> (Int, Int) throws(ShardFSError) -> [UInt8] {
    return { (offset: Int, count: Int) throws(ShardFSError) -> [UInt8] in
        invariant(offset >= 0 && count >= 0 && offset <= input.count - count, "read(\(offset), \(count)) outside a \(input.count)-byte file")
        return Array(input[offset..<offset + count])
    }
}
