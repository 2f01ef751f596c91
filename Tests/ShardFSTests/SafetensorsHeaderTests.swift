import Testing
@testable import ShardFS

/// Safetensors header validation: every malformed header is refused with a
/// message naming the file and the problem.
@Suite struct SafetensorsHeaderTests {
    static let fileName = "model-00003-of-00007.safetensors"

    /// A file of the 8-byte length, `json`, then `data`.
    static func file(_ json: String, data: Int) -> [UInt8] {
        let header = bytes(json)
        return le64(header.count) + header + [UInt8](repeating: 0xAB, count: data)
    }

    static func parse(_ file: [UInt8], fileSize: Int? = nil) throws(ShardFSError) -> SafetensorsHeader {
        try SafetensorsHeader(file: fileName, fileSize: fileSize ?? file.count) { (offset, count) throws(ShardFSError) in
            guard offset >= 0, count >= 0, offset + count <= file.count else {
                throw ShardFSError.badSource(file: fileName, reason: "test read out of range")
            }
            return Array(file[offset..<offset + count])
        }
    }

    static func refused(_ file: [UInt8], fileSize: Int? = nil, mentioning words: [String],
                        sourceLocation: SourceLocation = #_sourceLocation) {
        let error = expectRefusal(mentioning: [fileName] + words, sourceLocation: sourceLocation) { () throws(ShardFSError) in
            try parse(file, fileSize: fileSize)
        }
        if let error, case .badSource(let file, _) = error {
            #expect(file == fileName, sourceLocation: sourceLocation)
        } else if error != nil {
            Issue.record("expected .badSource, got \(error!)", sourceLocation: sourceLocation)
        }
    }

    @Test func validHeaderWithMetadata() throws {
        let json = """
            {"__metadata__": {"format": "pt", "note": "x"}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
             "a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}, "s": {"dtype": "F64", "shape": [], "data_offsets": [12, 20]},
             "e": {"dtype": "F16", "shape": [0, 3], "data_offsets": [20, 20]}}
            """ + "    "  // safetensors pads the header with spaces
        let header = try Self.parse(Self.file(json, data: 20))
        #expect(header.dataStart == 8 + bytes(json).count)
        #expect(header.entries == [
            SafetensorsEntry(name: "a", dtype: .bfloat16, shape: [2], begin: 0, end: 4),
            SafetensorsEntry(name: "b", dtype: .float32, shape: [2], begin: 4, end: 12),
            SafetensorsEntry(name: "s", dtype: .float64, shape: [], begin: 12, end: 20),
            SafetensorsEntry(name: "e", dtype: .float16, shape: [0, 3], begin: 20, end: 20),
        ])
    }

    @Test func emptyHeader() throws {
        let header = try Self.parse(Self.file("{}", data: 0))
        #expect(header.entries.isEmpty)
        #expect(header.dataStart == 10)
    }

    @Test func shorterThanEightBytes() {
        Self.refused([1, 0, 0], mentioning: ["too short", "3 bytes"])
        Self.refused([], mentioning: ["too short"])
    }

    @Test func headerLengthBeyondFile() {
        let file = le64(100) + bytes("{}")
        Self.refused(file, mentioning: ["header length 100", "does not fit"])
    }

    @Test func headerLongerThanLimit() {
        // The length field alone: the limit is checked before anything else is read.
        Self.refused(le64(100_000_001), fileSize: 200_000_000, mentioning: ["100000001", "100000000"])
        Self.refused(le64(-1), fileSize: 200_000_000, mentioning: ["exceeds"])
    }

    @Test func invalidJSON() {
        Self.refused(Self.file("{\"a\": ", data: 0), mentioning: ["not valid JSON"])
        Self.refused(Self.file("[1, 2]", data: 0), mentioning: ["not a JSON object"])
        Self.refused(Self.file("{\"a\": 1, \"a\": 2}", data: 0), mentioning: ["not valid JSON", "duplicate"])
    }

    @Test func unknownDType() {
        Self.refused(Self.file(#"{"t": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}"#, data: 8),
                     mentioning: ["t", "I64", "dtype"])
    }

    @Test func offsetsOutOfBounds() {
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: 4),
                     mentioning: ["tensor t", "[0, 8]", "outside the data region"])
    }

    @Test func overlap() {
        Self.refused(Self.file(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#, data: 12),
                     mentioning: ["a", "b", "overlap"])
    }

    @Test func gap() {
        Self.refused(Self.file(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#, data: 12),
                     mentioning: ["4..<8", "gap", "b"])
        // A gap at the very start.
        Self.refused(Self.file(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#, data: 8),
                     mentioning: ["0..<4", "a"])
    }

    @Test func shapeDoesNotMatchBytes() {
        Self.refused(Self.file(#"{"t": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}}"#, data: 8),
                     mentioning: ["tensor t", "[2, 3]", "12 bytes", "8"])
    }

    @Test func trailingBytes() {
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, data: 6),
                     mentioning: ["trailing bytes", "6 bytes"])
    }

    @Test func negativeOrReversedOffsets() {
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}"#, data: 4),
                     mentioning: ["tensor t", "reversed or negative"])
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#, data: 4),
                     mentioning: ["tensor t", "[4, 0]", "reversed or negative"])
    }

    @Test func malformedEntries() {
        Self.refused(Self.file(#"{"t": [1]}"#, data: 0), mentioning: ["tensor t", "not an object"])
        Self.refused(Self.file(#"{"t": {"shape": [1], "data_offsets": [0, 4]}}"#, data: 4), mentioning: ["tensor t", "dtype"])
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, data: 4), mentioning: ["tensor t", "shape"])
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#, data: 4), mentioning: ["tensor t", "data_offsets"])
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "data_offsets": [0, 4]}}"#, data: 4), mentioning: ["tensor t", "shape"])
        Self.refused(Self.file(#"{"t": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 4]}}"#, data: 4),
                     mentioning: ["tensor t", "too large"])
    }
}
