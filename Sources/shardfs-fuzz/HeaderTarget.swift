import ShardFS

/// The safetensors header parser, on the input taken as a whole file and as
/// the start of a longer file whose data region (zeros) is as long as the
/// header's largest end offset, so that a header alone (the seeds) reaches
/// the checks that follow parsing.
enum HeaderTarget {
    static func run(_ input: [UInt8]) {
        parse(input, fileSize: input.count)
        if let claimed = largestEndOffset(input), input.count >= 8 {
            let length = input[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            if length < 1 << 32 {
                let (size, overflow) = (8 + Int(length)).addingReportingOverflow(claimed)
                if !overflow { parse(input, fileSize: size) }
            }
        }
    }

    static func parse(_ input: [UInt8], fileSize: Int) {
        // Bytes past the input read as zeros, as from a sparse file.
        let read = { (offset: Int, count: Int) throws(ShardFSError) -> [UInt8] in
            invariant(offset >= 0 && count >= 0 && offset <= fileSize - count, "read(\(offset), \(count)) outside a \(fileSize)-byte file")
            invariant(count <= SafetensorsHeader.maximumHeaderLength, "read of \(count) bytes, above the header limit")
            var bytes = [UInt8](repeating: 0, count: count)
            if offset < input.count {
                let available = min(count, input.count - offset)
                bytes.replaceSubrange(0..<available, with: input[offset..<offset + available])
            }
            return bytes
        }
        guard let header = try? SafetensorsHeader(file: "fuzz.safetensors", fileSize: fileSize, read: read) else { return }
        // Accepted: the entries tile the data region exactly, and each one's
        // byte range matches its shape.
        invariant(header.dataStart >= 10 && header.dataStart <= fileSize, "data region starts at \(header.dataStart)")
        var cursor = 0
        for entry in header.entries {
            invariant(entry.begin == cursor, "\(entry.name) begins at \(entry.begin), not \(cursor)")
            var bytes = entry.dtype.size
            for d in entry.shape {
                let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
                invariant(!overflow, "\(entry.name)'s shape overflows but was accepted")
                bytes = product
            }
            invariant(entry.end - entry.begin == bytes, "\(entry.name)'s range does not match its shape")
            cursor = entry.end
        }
        invariant(header.dataStart + cursor == fileSize, "tensors end at \(cursor), the file at \(fileSize)")
    }

    /// The largest second element of a `data_offsets` pair, if the header is JSON.
    static func largestEndOffset(_ input: [UInt8]) -> Int? {
        guard input.count > 8, case let .object(members)? = try? JSONReader.parse(input[8...]) else { return nil }
        var largest = 0
        for (_, value) in members {
            if case let .array(offsets)? = value["data_offsets"], offsets.count == 2, let end = offsets[1].intValue, end > largest {
                largest = end
            }
        }
        return largest
    }
}
