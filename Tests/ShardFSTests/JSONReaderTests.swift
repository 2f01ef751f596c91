import Testing
@testable import ShardFS

@Suite struct JSONReaderTests {
    func parse(_ text: String) throws(JSONParseError) -> JSONValue { try JSONReader.parse(text) }

    func refused(_ text: String, mentioning word: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let value = try parse(text)
            Issue.record("accepted \(text.prefix(40)) as \(value)", sourceLocation: sourceLocation)
        } catch {
            if let word { #expect(error.description.contains(word), "\(error.description)", sourceLocation: sourceLocation) }
        }
    }

    @Test func duplicateKeysRefused() {
        refused(#"{"a": 1, "a": 2}"#, mentioning: "duplicate key \"a\"")
        refused(#"{"x": {"b": true, "b": true}}"#, mentioning: "duplicate")
    }

    @Test func depthLimit() throws {
        let limit = JSONReader.maximumDepth
        #expect(limit == 64)
        let deepest = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        _ = try parse(deepest)
        refused(String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1), mentioning: "nesting")
        refused(String(repeating: "{\"a\":", count: limit + 1) + "1" + String(repeating: "}", count: limit + 1), mentioning: "nesting")
        // Hostile depth is refused, not a stack overflow.
        refused(String(repeating: "[", count: 1_000_000))
    }

    @Test func bigIntegersExact() throws {
        #expect(try parse("9007199254740993") == .int(9_007_199_254_740_993))  // 2^53 + 1
        #expect(try parse("9223372036854775807") == .int(Int.max))
        #expect(try parse("-9223372036854775808") == .int(Int.min))
        #expect(try parse(#"{"n": 123456789012345678}"#)["n"]?.intValue == 123_456_789_012_345_678)
        #expect(try parse("9223372036854775808") == .double(9_223_372_036_854_775_808.0))
        #expect(try parse("1.5") == .double(1.5))
        #expect(try parse("-2e3") == .double(-2000))
        #expect(try parse("16.0").intValue == 16)
    }

    @Test func escapes() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{08}\u{0C}\n\r\t"))
        #expect(try parse(#""\u00e9\u4e2d\ud83d\ude00""#) == .string("é中😀"))
        #expect(try parse("\"é中😀\"") == .string("é中😀"))  // raw UTF-8
        refused(#""\ud83d""#, mentioning: "surrogate")
        refused(#""\ude00""#)
        refused(#""\x""#, mentioning: "escape")
        refused(#""\u12""#)
        refused("\"a\nb\"", mentioning: "control character")
        refused("\"abc", mentioning: "unterminated")
    }

    @Test func structureAndOrder() throws {
        let value = try parse(#" { "z": [1, null, true, false], "a": {"k": "v"}, "m": -0 } "#)
        guard case let .object(members) = value else {
            Issue.record("not an object")
            return
        }
        #expect(members.map(\.key) == ["z", "a", "m"])  // key order kept
        #expect(value["z"] == .array([.int(1), .null, .bool(true), .bool(false)]))
        #expect(value["a"]?["k"]?.stringValue == "v")
        #expect(value["m"] == .int(0))
        for bad in ["", "{", "[1,]", "{\"a\" 1}", "[1 2]", "tru", "01x", "1.", "-", "{} {}", "'a'", "[1]x"] {
            refused(bad)
        }
    }
}
