/// One tensor as a safetensors header describes it.
public struct SafetensorsEntry: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range relative to the start of the data region.
    public let begin: Int
    public let end: Int
}

/// A validated safetensors header.
///
/// The format: an 8-byte little-endian header length N, N bytes of JSON, then
/// the data region. Every check the format demands is made here, so that
/// everything downstream can trust offsets and sizes without re-checking.
public struct SafetensorsHeader: Sendable {
    /// The safetensors format's own limit on the JSON header.
    public static let maximumHeaderLength = 100_000_000

    /// Offset of the data region in the file (8 + header length).
    public let dataStart: Int
    /// Entries in data order (ascending offsets).
    public let entries: [SafetensorsEntry]

    /// Parses and validates the header of a file of `fileSize` bytes whose
    /// bytes `read(offset, count)` returns. `file` names the file in errors.
    public init(file: String, fileSize: Int, read: (Int, Int) throws(ShardFSError) -> [UInt8]) throws(ShardFSError) {
        func bad(_ reason: String) -> ShardFSError { .badSource(file: file, reason: reason) }
        guard fileSize >= 8 else { throw bad("too short for a safetensors file (\(fileSize) bytes; the header length alone takes 8)") }
        let lengthBytes = try read(0, 8)
        let length = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length <= UInt64(SafetensorsHeader.maximumHeaderLength) else {
            throw bad("header length \(length) exceeds the safetensors limit of \(SafetensorsHeader.maximumHeaderLength) bytes")
        }
        guard length >= 2, 8 + Int(length) <= fileSize else {
            throw bad("header length \(length) does not fit in the file (\(fileSize) bytes): truncated or not a safetensors file")
        }
        let headerBytes = try read(8, Int(length))
        let json: JSONValue
        do {
            json = try JSONReader.parse(headerBytes)
        } catch {
            throw bad("header is not valid JSON: \(error)")
        }
        guard case let .object(members) = json else { throw bad("header is not a JSON object") }
        dataStart = 8 + Int(length)
        let dataLength = fileSize - dataStart

        var entries: [SafetensorsEntry] = []
        for (name, value) in members where name != "__metadata__" {
            guard case .object = value else { throw bad("tensor \(name): entry is \(value.kindName), not an object") }
            guard let dtypeName = value["dtype"]?.stringValue else { throw bad("tensor \(name): no \"dtype\"") }
            guard let dtype = DType(safetensorsName: dtypeName) else {
                throw bad("tensor \(name): unsupported dtype \"\(dtypeName)\" (ShardFS reads BF16, F16, F32, F64)")
            }
            guard case let .array(shapeValues)? = value["shape"] else { throw bad("tensor \(name): no \"shape\" array") }
            var shape: [Int] = []
            for dimension in shapeValues {
                guard let d = dimension.intValue, d >= 0 else { throw bad("tensor \(name): shape holds \(dimension), not a size") }
                shape.append(d)
            }
            guard case let .array(offsets)? = value["data_offsets"], offsets.count == 2,
                  let begin = offsets[0].intValue, let end = offsets[1].intValue else {
                throw bad("tensor \(name): \"data_offsets\" is not a pair of integers")
            }
            guard begin >= 0, begin <= end else { throw bad("tensor \(name): data_offsets [\(begin), \(end)] are reversed or negative") }
            guard end <= dataLength else {
                throw bad("tensor \(name): data_offsets [\(begin), \(end)] lie outside the data region (\(dataLength) bytes): truncated file or bad header")
            }
            var bytes = dtype.size
            for d in shape {
                let (product, overflow) = bytes.multipliedReportingOverflow(by: d)
                guard !overflow else { throw bad("tensor \(name): shape \(shape) is too large") }
                bytes = product
            }
            guard bytes == end - begin else {
                throw bad("tensor \(name): shape \(shape) of \(dtypeName) needs \(bytes) bytes but data_offsets [\(begin), \(end)] hold \(end - begin)")
            }
            entries.append(SafetensorsEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var cursor = 0
        var previous: String?
        for entry in entries {
            if entry.begin < cursor {
                throw bad("tensors \(previous ?? "?") and \(entry.name) overlap (byte \(entry.begin) is already used)")
            }
            if entry.begin > cursor {
                throw bad("bytes \(cursor)..<\(entry.begin) of the data region belong to no tensor (a gap before \(entry.name))")
            }
            cursor = entry.end
            previous = entry.name
        }
        guard cursor == dataLength else {
            throw bad("the data region holds \(dataLength) bytes but its tensors end at byte \(cursor): \(cursor < dataLength ? "trailing bytes" : "truncated file")")
        }
        self.entries = entries
    }
}
