import Foundation
import Testing
@testable import ShardFS

// Helpers shared by the test files. Nothing here calls the code under test to
// compute an expected value: byte builders, the zip reader and the refusal
// helper are written from the specs (docs/formats/pt.md, docs/formats/nxd-layout.md) alone.

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: Little-endian byte builders

func le16(_ v: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
func le64(_ v: Int) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

func readLE(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> Int {
    var value = 0
    for i in 0..<count { value |= Int(bytes[offset + i]) << (8 * i) }
    return value
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

func decodeBase64(_ text: String) -> [UInt8] {
    guard let data = Data(base64Encoded: text) else {
        Issue.record("fixture literal is not valid base64")
        return []
    }
    return [UInt8](data)
}

/// The index of the first byte where `a` and `b` differ (or where the shorter ends); nil when equal.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> Int? {
    let n = min(a.count, b.count)
    for i in 0..<n where a[i] != b[i] { return i }
    return a.count == b.count ? nil : n
}

/// Expects `got == expected`, reporting only the first differing byte (the
/// arrays can be hundreds of kilobytes).
func expectSameBytes(_ got: [UInt8], _ expected: [UInt8], _ what: String,
                     sourceLocation: SourceLocation = #_sourceLocation) {
    if let index = firstDifference(got, expected) {
        let window = { (b: [UInt8]) -> String in
            let lo = max(0, index - 8), hi = min(b.count, index + 8)
            return lo < hi ? b[lo..<hi].map { String(format: "%02x", $0) }.joined(separator: " ") : "(end)"
        }
        Issue.record("\(what): \(got.count) bytes vs expected \(expected.count); first difference at byte \(index): got [\(window(got))] expected [\(window(expected))] (window from byte \(max(0, index - 8)))",
                     sourceLocation: sourceLocation)
    }
}

// MARK: Reading virtual files

/// The whole planned file, made and read in one call.
func readWhole(_ file: PlannedFile, sources: [SourceFile] = []) throws -> [UInt8] {
    try readWhole(file.make(), sources: sources)
}

/// The whole virtual file, read in one call.
func readWhole(_ file: VirtualFile, sources: [SourceFile] = []) throws -> [UInt8] {
    let reader = ExtentReader(sources: sources)
    var out = [UInt8](repeating: 0xEE, count: file.size)
    var count = 0
    var failure: ShardFSError?
    out.withUnsafeMutableBytes { buffer in
        do throws(ShardFSError) { count = try reader.read(file, at: 0, into: buffer) } catch { failure = error }
    }
    if let failure { throw failure }
    #expect(count == file.size)
    return out
}

/// The literal bytes of a virtual file, by file offset, with the extents'
/// offsets summed here from their sizes. Reads no source data.
struct LiteralView {
    let extents: [Extent]
    let starts: [Int]

    init(_ file: VirtualFile) {
        extents = file.extents
        var starts: [Int] = []
        var offset = 0
        for extent in file.extents {
            starts.append(offset)
            offset += extent.byteCount
        }
        self.starts = starts
    }

    /// Bytes `range`; nil when any byte of it lies in a slice extent.
    func bytes(_ range: Range<Int>) -> [UInt8]? {
        // Last extent starting at or before range.lowerBound.
        var low = 0, high = starts.count
        while high - low > 1 {
            let mid = (low + high) / 2
            if starts[mid] <= range.lowerBound { low = mid } else { high = mid }
        }
        var result: [UInt8] = []
        var index = low
        while index < extents.count, starts[index] < range.upperBound {
            let start = starts[index], end = start + extents[index].byteCount
            let lo = max(start, range.lowerBound), hi = min(end, range.upperBound)
            if lo < hi {
                guard case let .literal(b) = extents[index] else { return nil }
                result += b[(lo - start)..<(hi - start)]
            }
            index += 1
        }
        return result.count == range.count ? result : nil
    }
}

/// The bytes `range` of a virtual file taken from its literal extents only;
/// nil when any byte of the range lies in a slice extent.
func literalBytes(_ file: VirtualFile, _ range: Range<Int>) -> [UInt8]? {
    LiteralView(file).bytes(range)
}

func literalBytes(_ file: PlannedFile, _ range: Range<Int>) -> [UInt8]? {
    literalBytes(file.make(), range)
}

// MARK: A minimal zip reader (docs/formats/pt.md, "Zip framing")

struct ZipEntry {
    let name: String
    let headerOffset: Int
    let dataOffset: Int
    let size: Int
    let localExtra: [UInt8]
    /// Where its central-directory entry starts (its CRC-32 at +16).
    let centralOffset: Int
}

/// The one zip reader of the tests, independent of the engine's: what a
/// test compares or damages, it finds here.
enum TestZip {
    /// The entries of a zip archive, in central-directory order.
    static func entries(_ b: [UInt8]) throws -> [ZipEntry] {
        guard b.count >= 22, readLE(b, b.count - 22, 4) == 0x0605_4B50 else {
            throw TestFailure("no end-of-central-directory record at the end of the file")
        }
        let eocd = b.count - 22
        var count = readLE(b, eocd + 10, 2)
        var directory = readLE(b, eocd + 16, 4)
        if directory == 0xFFFF_FFFF || count == 0xFFFF {
            let locator = eocd - 20
            guard readLE(b, locator, 4) == 0x0706_4B50 else { throw TestFailure("no zip64 locator") }
            let end64 = readLE(b, locator + 8, 8)
            guard readLE(b, end64, 4) == 0x0606_4B50 else { throw TestFailure("no zip64 end record") }
            count = readLE(b, end64 + 32, 8)
            directory = readLE(b, end64 + 48, 8)
        }
        var result: [ZipEntry] = []
        var p = directory
        for _ in 0..<count {
            guard readLE(b, p, 4) == 0x0201_4B50 else { throw TestFailure("no central-directory entry at \(p)") }
            var size = readLE(b, p + 24, 4)
            let nameLength = readLE(b, p + 28, 2), extraLength = readLE(b, p + 30, 2), commentLength = readLE(b, p + 32, 2)
            var headerOffset = readLE(b, p + 42, 4)
            let name = String(decoding: b[(p + 46)..<(p + 46 + nameLength)], as: UTF8.self)
            // zip64 extra: only the fields that overflowed, in order usize, csize, offset.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = readLE(b, e, 2), length = readLE(b, e + 2, 2)
                if id == 1 {
                    var f = e + 4
                    if size == 0xFFFF_FFFF { size = readLE(b, f, 8); f += 16 }
                    if headerOffset == 0xFFFF_FFFF { headerOffset = readLE(b, f, 8) }
                }
                e += 4 + length
            }
            guard readLE(b, headerOffset, 4) == 0x0403_4B50 else { throw TestFailure("no local header for \(name)") }
            let localName = readLE(b, headerOffset + 26, 2), localExtra = readLE(b, headerOffset + 28, 2)
            let dataOffset = headerOffset + 30 + localName + localExtra
            result.append(ZipEntry(name: name, headerOffset: headerOffset, dataOffset: dataOffset, size: size,
                                   localExtra: Array(b[(headerOffset + 30 + localName)..<dataOffset]), centralOffset: p))
            p += 46 + nameLength + extraLength + commentLength
        }
        return result
    }

    /// The data of each entry, by name.
    static func contents(_ b: [UInt8]) throws -> [String: [UInt8]] {
        var result: [String: [UInt8]] = [:]
        for entry in try entries(b) { result[entry.name] = Array(b[entry.dataOffset..<entry.dataOffset + entry.size]) }
        return result
    }
}

// MARK: Refusals

/// The ShardFSError `body` throws, or nil when it returns.
func refusal<T>(_ body: () throws(ShardFSError) -> T) -> ShardFSError? {
    do { _ = try body(); return nil } catch { return error }
}

/// Expects `body` to throw a ShardFSError whose description contains each of `words`.
@discardableResult
func expectRefusal<T>(mentioning words: [String], sourceLocation: SourceLocation = #_sourceLocation,
                      _ body: () throws(ShardFSError) -> T) -> ShardFSError? {
    guard let error = refusal(body) else {
        Issue.record("expected a refusal mentioning \(words), but it succeeded", sourceLocation: sourceLocation)
        return nil
    }
    for word in words where !error.description.contains(word) {
        Issue.record("refusal \"\(error.description)\" does not mention \"\(word)\"", sourceLocation: sourceLocation)
    }
    return error
}

// MARK: Deterministic pseudo-random numbers (SplitMix64)

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
