import ShardFS

/// The four torch.save readers on the input as a whole file (seeded with
/// real torch.save files: mutations inside data.pkl leave the zip valid,
/// since nothing checks CRCs). Every located tensor's elements lie inside
/// its storage record, and that record inside the file.
enum TorchSaveTarget {
    static func run(_ input: [UInt8]) {
        let read = boundedReader(input)
        if let tensors = try? TorchSaveReader.stateDict(file: "fuzz.pt", fileSize: input.count, read: read) {
            for tensor in tensors { check(tensor, fileSize: input.count) }
        }
        if let tensor = try? TorchSaveReader.singleTensor(file: "fuzz.pt", fileSize: input.count, read: read) {
            check(tensor, fileSize: input.count)
        }
        if let references = try? TorchSaveReader.tensorReferences(file: "fuzz.pt", fileSize: input.count, read: read) {
            invariant(Set(references.map(\.key)).count == references.count, "a key listed twice")
            invariant(references.allSatisfy { $0.tid >= 0 }, "a negative tid")
        }
        if let info = try? TorchSaveReader.tensorInfo(file: "fuzz.pt", fileSize: input.count, read: read) {
            for (tid, entry) in info { invariant(tid >= 0 && entry.shape.allSatisfy { $0 >= 0 }, "tid \(tid): shape \(entry.shape)") }
        }
    }

    static func check(_ t: LocatedTensor, fileSize: Int) {
        let record = t.storage
        invariant(record.dataOffset >= 0 && record.dataOffset <= fileSize - record.size, "\(t.key): record outside the file")
        invariant(t.shape.count == t.strides.count, "\(t.key): shape \(t.shape), strides \(t.strides)")
        invariant(record.size % t.dtype.size == 0, "\(t.key): record of \(record.size) bytes for \(t.dtype)")
        invariant(t.offset >= record.dataOffset && (t.offset - record.dataOffset) % t.dtype.size == 0,
                  "\(t.key): offset \(t.offset) outside or misaligned in record at \(record.dataOffset)")
        guard !t.shape.contains(0) else {
            invariant(t.offset <= record.dataOffset + record.size, "\(t.key): empty view starts past its record")
            return
        }
        // The last element the view reaches, in bytes past its first.
        var last = 0
        for (size, stride) in zip(t.shape, t.strides) {
            let (step, o1) = (size - 1).multipliedReportingOverflow(by: stride)
            let (sum, o2) = last.addingReportingOverflow(step)
            invariant(!o1 && !o2, "\(t.key): view overflows but was accepted")
            last = sum
        }
        let (lastByte, overflow) = last.multipliedReportingOverflow(by: t.dtype.size)
        invariant(!overflow && t.offset - record.dataOffset + lastByte + t.dtype.size <= record.size,
                  "\(t.key): view \(t.shape) \(t.strides) at \(t.offset) reaches past its record")
    }
}
