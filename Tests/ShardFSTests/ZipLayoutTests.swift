import Testing
@testable import ShardFS

/// Zip framing (docs/formats/pt.md, "Zip framing"), with every offset and field
/// computed by hand here. Records past 4 GiB use `.slice` extents: only the
/// literal extents (headers, descriptors, directory) are inspected, so no
/// source data is ever read.
@Suite struct ZipLayoutTests {
    static let limit = 0xFFFF_FFFF

    // MARK: Expected bytes, from the spec

    /// `n` bytes of bfloat16 source data (a slice that is never read).
    func slice(bytes n: Int) -> Extent {
        precondition(n % 2 == 0)
        return .slice(SliceExtent(fileIndex: 0, offset: 0, rowCount: 1, rowElements: n / 2, rowStride: n,
                                  sourceDType: .bfloat16, outputDType: .bfloat16))
    }

    func fbExtra(pad: Int) -> [UInt8] { bytes("FB") + le16(pad) + [UInt8](repeating: UInt8(ascii: "Z"), count: pad) }

    func localHeader(_ name: String, extra: [UInt8]) -> [UInt8] {
        le32(0x0403_4B50) + le16(0) + le16(0x0808) + le16(0) + le16(0) + le16(0)
            + le32(0) + le32(0) + le32(0) + le16(name.utf8.count) + le16(extra.count) + bytes(name) + extra
    }

    func descriptor16(size: Int) -> [UInt8] { le32(0x0807_4B50) + le32(0) + le32(size) + le32(size) }
    func descriptor24(size: Int) -> [UInt8] { le32(0x0807_4B50) + le32(0) + le64(size) + le64(size) }

    func centralEntry(_ name: String, size32: Int, offset32: Int, extra: [UInt8]) -> [UInt8] {
        le32(0x0201_4B50) + le16(0) + le16(0) + le16(0x0808) + le16(0) + le16(0) + le16(0)
            + le32(0) + le32(size32) + le32(size32) + le16(name.utf8.count) + le16(extra.count)
            + le16(0) + le16(0) + le16(0) + le32(0) + le32(offset32) + bytes(name) + extra
    }

    func endRecords(count: Int, directorySize: Int, directoryOffset: Int) -> [UInt8] {
        let zip64End = directoryOffset + directorySize
        return le32(0x0606_4B50) + le64(44) + le16(0x031E) + le16(0x002D) + le32(0) + le32(0)
            + le64(count) + le64(count) + le64(directorySize) + le64(directoryOffset)
            + le32(0x0706_4B50) + le32(0) + le64(zip64End) + le32(1)
            + le32(0x0605_4B50) + le16(0) + le16(0) + le16(min(count, 0xFFFF)) + le16(min(count, 0xFFFF))
            + le32(min(directorySize, Self.limit)) + le32(min(directoryOffset, Self.limit)) + le16(0)
    }

    func expectLiteral(_ file: VirtualFile, at offset: Int, _ expected: [UInt8], _ what: String,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        guard let got = literalBytes(file, offset..<offset + expected.count) else {
            Issue.record("\(what): bytes \(offset)..<\(offset + expected.count) are not all literal", sourceLocation: sourceLocation)
            return
        }
        expectSameBytes(got, expected, what, sourceLocation: sourceLocation)
    }

    // MARK: Small records, whole file by hand

    @Test func smallRecordsWholeFile() throws {
        let file = ZipLayout.file([
            ZipLayout.Record(name: "a/data.pkl", bytes: bytes("hello")),
            ZipLayout.Record(name: "a/empty", bytes: []),
            ZipLayout.Record(name: "a/x", bytes: [UInt8](repeating: 7, count: 100)),
        ])
        // Record 0 at 0: 30 + 10 + 4 = 44 -> pad 20, data at 64..<69, descriptor to 85.
        // Record 1 at 85: 85 + 30 + 7 + 4 = 126 -> pad 2, data at 128 (empty), descriptor to 144.
        // Record 2 at 144: 144 + 30 + 3 + 4 = 181 -> pad 11, data at 192..<292, descriptor to 308.
        var expected = localHeader("a/data.pkl", extra: fbExtra(pad: 20)) + bytes("hello") + descriptor16(size: 5)
        expected += localHeader("a/empty", extra: fbExtra(pad: 2)) + descriptor16(size: 0)
        expected += localHeader("a/x", extra: fbExtra(pad: 11)) + [UInt8](repeating: 7, count: 100) + descriptor16(size: 100)
        #expect(expected.count == 308)
        let directory = centralEntry("a/data.pkl", size32: 5, offset32: 0, extra: [])
            + centralEntry("a/empty", size32: 0, offset32: 85, extra: [])
            + centralEntry("a/x", size32: 100, offset32: 144, extra: [])
        expected += directory + endRecords(count: 3, directorySize: directory.count, directoryOffset: 308)

        #expect(file.size == expected.count)
        expectSameBytes(try readWhole(file), expected, "small zip")
        #expect(file.crcSlots == [
            CRCSlot(data: 64..<69, fieldOffsets: [69 + 4, 308 + 16]),
            CRCSlot(data: 128..<128, fieldOffsets: [128 + 4, 308 + 56 + 16]),
            CRCSlot(data: 192..<292, fieldOffsets: [292 + 4, 308 + 56 + 53 + 16]),
        ])
    }

    /// An FB extra is always there, even when the pad is 0.
    @Test func zeroPadStillHasFBExtra() throws {
        // 30 + name + 4 = 64 with a 30-byte name: pad 0.
        let name = String(repeating: "n", count: 30)
        let file = ZipLayout.file([ZipLayout.Record(name: name, bytes: [1])])
        expectLiteral(file, at: 0, localHeader(name, extra: fbExtra(pad: 0)) + [1] + descriptor16(size: 1), "record")
        #expect(file.crcSlots.first?.data == 64..<65)
    }

    // MARK: zip64

    /// Four records: small; size >= 0xFFFFFFFF; offset >= 0xFFFFFFFF; both
    /// (size exactly 0xFFFFFFFF, made of a slice and a 1-byte literal).
    @Test func zip64SizeOffsetAndBoth() throws {
        let bigSize = 0x1_0000_0040          // 4 GiB + 64
        let edgeSize = 0xFFFF_FFFF           // exactly the limit
        let file = ZipLayout.file([
            ZipLayout.Record(name: "r/small", bytes: bytes("hello")),
            ZipLayout.Record(name: "r/big", payload: [slice(bytes: bigSize)]),
            ZipLayout.Record(name: "r/after", bytes: bytes("abc")),
            ZipLayout.Record(name: "r/both", payload: [slice(bytes: edgeSize - 1), .literal([0x42])]),
        ])

        // r/small at 0: 30 + 7 + 4 = 41 -> pad 23; data 64..<69; 16-byte descriptor; next 85.
        expectLiteral(file, at: 0, localHeader("r/small", extra: fbExtra(pad: 23)), "r/small header")
        expectLiteral(file, at: 64, bytes("hello") + descriptor16(size: 5), "r/small data + descriptor")

        // r/big at 85: zip64 extra size(8) + 0(8) (20 bytes); 85 + 30 + 5 + 20 + 4 = 144 -> pad 48;
        // data 192..<192+size; 24-byte descriptor.
        let zip64Big = le16(1) + le16(16) + le64(bigSize) + le64(0)
        expectLiteral(file, at: 85, localHeader("r/big", extra: zip64Big + fbExtra(pad: 48)), "r/big header")
        let bigEnd = 192 + bigSize
        expectLiteral(file, at: bigEnd, descriptor24(size: bigSize), "r/big descriptor")
        #expect(literalBytes(file, 191..<193) == nil)  // the data is a slice, not a literal

        // r/after at 0x1_0000_0118 (= bigEnd + 24): zip64 extra offset(8) (12 bytes);
        // 0x118 % 64 = 24; 24 + 30 + 7 + 12 + 4 = 77 -> pad 51; data at header + 104.
        let afterHeader = 0x1_0000_0118
        #expect(afterHeader == bigEnd + 24)
        let zip64After = le16(1) + le16(8) + le64(afterHeader)
        expectLiteral(file, at: afterHeader, localHeader("r/after", extra: zip64After + fbExtra(pad: 51)), "r/after header")
        let afterData = afterHeader + 104
        #expect(afterData == 0x1_0000_0180)
        expectLiteral(file, at: afterData, bytes("abc") + descriptor24(size: 3), "r/after data + descriptor")

        // r/both at 0x1_0000_019B: zip64 extra size, 0, offset (28 bytes);
        // 0x19B % 64 = 27; 27 + 30 + 6 + 28 + 4 = 95 -> pad 33; data at header + 101.
        let bothHeader = afterData + 3 + 24
        #expect(bothHeader == 0x1_0000_019B)
        let zip64Both = le16(1) + le16(24) + le64(edgeSize) + le64(0) + le64(bothHeader)
        expectLiteral(file, at: bothHeader, localHeader("r/both", extra: zip64Both + fbExtra(pad: 33)), "r/both header")
        let bothData = bothHeader + 101
        #expect(bothData == 0x1_0000_0200)
        let bothEnd = bothData + edgeSize
        expectLiteral(file, at: bothEnd - 1, [0x42] + descriptor24(size: edgeSize), "r/both last byte + descriptor")

        // Central directory right after, then the end records.
        let directoryOffset = bothEnd + 24
        #expect(directoryOffset == 0x2_0000_0217)
        let e0 = centralEntry("r/small", size32: 5, offset32: 0, extra: [])
        let e1 = centralEntry("r/big", size32: Self.limit, offset32: 85,
                              extra: le16(1) + le16(16) + le64(bigSize) + le64(bigSize))
        let e2 = centralEntry("r/after", size32: 3, offset32: Self.limit,
                              extra: le16(1) + le16(8) + le64(afterHeader))
        let e3 = centralEntry("r/both", size32: Self.limit, offset32: Self.limit,
                              extra: le16(1) + le16(24) + le64(edgeSize) + le64(edgeSize) + le64(bothHeader))
        #expect([e0.count, e1.count, e2.count, e3.count] == [53, 71, 65, 80])
        let directory = e0 + e1 + e2 + e3
        let tail = directory + endRecords(count: 4, directorySize: 269, directoryOffset: directoryOffset)
        expectLiteral(file, at: directoryOffset, tail, "central directory and end records")
        #expect(file.size == directoryOffset + 269 + 56 + 20 + 22)
        // The end record caps the directory offset at 0xFFFFFFFF.
        #expect(Array(tail.suffix(6)) == le32(Self.limit) + le16(0))

        // CRC fields: in each data descriptor (+4) and central entry (+16).
        #expect(file.crcSlots == [
            CRCSlot(data: 64..<69, fieldOffsets: [69 + 4, directoryOffset + 16]),
            CRCSlot(data: 192..<bigEnd, fieldOffsets: [bigEnd + 4, directoryOffset + 53 + 16]),
            CRCSlot(data: afterData..<afterData + 3, fieldOffsets: [afterData + 3 + 4, directoryOffset + 53 + 71 + 16]),
            CRCSlot(data: bothData..<bothEnd, fieldOffsets: [bothEnd + 4, directoryOffset + 53 + 71 + 65 + 16]),
        ])
        for slot in file.crcSlots { #expect(slot.data.lowerBound % 64 == 0) }
        // Each CRC field offset lands on a literal zero (the served CRC).
        for slot in file.crcSlots {
            for field in slot.fieldOffsets { #expect(literalBytes(file, field..<field + 4) == [0, 0, 0, 0]) }
        }
    }

    /// A local header exactly at 0xFFFFFFFF needs zip64; one at 0xFFFFFFFE does not.
    @Test func headerOffsetBoundary() throws {
        // First record: header 0, 30 + 1 + 4 = 35 -> pad 29, data at 64, 16-byte descriptor.
        // Size 0xFFFFFFAF puts the next header at 64 + 0xFFFFFFAF + 16 = 0xFFFFFFFF.
        let atLimit = ZipLayout.file([
            ZipLayout.Record(name: "x", payload: [slice(bytes: 0xFFFF_FFAE), .literal([1])]),
            ZipLayout.Record(name: "y", bytes: bytes("z")),
        ])
        expectLiteral(atLimit, at: 0, localHeader("x", extra: fbExtra(pad: 29)), "x header")
        expectLiteral(atLimit, at: 64 + 0xFFFF_FFAE, [1] + descriptor16(size: 0xFFFF_FFAF), "x descriptor")
        // y at 0xFFFFFFFF: zip64 offset extra; 63 + 30 + 1 + 12 + 4 = 110 -> pad 18; data at 0x1_0000_0040.
        let y = 0xFFFF_FFFF
        expectLiteral(atLimit, at: y, localHeader("y", extra: le16(1) + le16(8) + le64(y) + fbExtra(pad: 18)), "y header")
        expectLiteral(atLimit, at: 0x1_0000_0040, bytes("z") + descriptor24(size: 1), "y data + descriptor")
        let directory = 0x1_0000_0040 + 1 + 24
        let entries = centralEntry("x", size32: 0xFFFF_FFAF, offset32: 0, extra: [])
            + centralEntry("y", size32: 1, offset32: Self.limit, extra: le16(1) + le16(8) + le64(y))
        expectLiteral(atLimit, at: directory, entries + endRecords(count: 2, directorySize: entries.count, directoryOffset: directory),
                      "directory")

        // One byte less: y at 0xFFFFFFFE, no zip64 anywhere; 62 + 30 + 1 + 4 = 97 -> pad 31.
        let below = ZipLayout.file([
            ZipLayout.Record(name: "x", payload: [slice(bytes: 0xFFFF_FFAE)]),
            ZipLayout.Record(name: "y", bytes: bytes("z")),
        ])
        let y2 = 0xFFFF_FFFE
        expectLiteral(below, at: 64 + 0xFFFF_FFAE, descriptor16(size: 0xFFFF_FFAE), "x descriptor")
        expectLiteral(below, at: y2, localHeader("y", extra: fbExtra(pad: 31)), "y header")
        expectLiteral(below, at: 0x1_0000_0040, bytes("z") + descriptor16(size: 1), "y data + descriptor")
        let directory2 = 0x1_0000_0040 + 1 + 16
        let entries2 = centralEntry("x", size32: 0xFFFF_FFAE, offset32: 0, extra: [])
            + centralEntry("y", size32: 1, offset32: y2, extra: [])
        expectLiteral(below, at: directory2,
                      entries2 + endRecords(count: 2, directorySize: entries2.count, directoryOffset: directory2), "directory")
    }

    /// A record of 0xFFFFFFFE bytes at offset 0 stays 32-bit.
    @Test func sizeJustBelowLimit() throws {
        let size = 0xFFFF_FFFE
        let file = ZipLayout.file([ZipLayout.Record(name: "s", payload: [slice(bytes: size)])])
        expectLiteral(file, at: 0, localHeader("s", extra: fbExtra(pad: 29)), "header")
        expectLiteral(file, at: 64 + size, descriptor16(size: size), "descriptor")
        let directory = 64 + size + 16
        let entry = centralEntry("s", size32: size, offset32: 0, extra: [])
        // The directory starts past 4 GiB: the end record's offset is capped, the zip64 one is exact.
        expectLiteral(file, at: directory, entry + endRecords(count: 1, directorySize: entry.count, directoryOffset: directory),
                      "directory")
        #expect(directory > Self.limit)
    }

    /// More than 0xFFFF records: the end record's counts are capped, the zip64
    /// end record's are exact.
    @Test func manyRecordsCapCounts() throws {
        let n = 65_600
        func name(_ i: Int) -> String {
            let digits = String(i)
            return "r/" + String(repeating: "0", count: 5 - digits.count) + digits
        }
        let file = ZipLayout.file((0..<n).map { ZipLayout.Record(name: name($0), payload: [slice(bytes: 2)]) })
        let view = LiteralView(file)
        func expectView(_ offset: Int, _ expected: [UInt8], _ what: String) {
            guard let got = view.bytes(offset..<offset + expected.count) else {
                Issue.record("\(what): not literal")
                return
            }
            expectSameBytes(got, expected, what)
        }
        // Record 0: header 0, data 64, descriptor to 82. Record i >= 1: header 64i + 18
        // (+ 30 + 7 + 4 = 64i + 59 -> pad 5), data 64(i+1), descriptor to 64(i+1) + 18.
        let directoryOffset = 64 * n + 18
        let directorySize = n * (46 + 7)
        #expect(file.size == directoryOffset + directorySize + 56 + 20 + 22)
        expectView(file.size - 98, endRecords(count: n, directorySize: directorySize, directoryOffset: directoryOffset), "end records")
        expectView(file.size - 22 + 8, le16(0xFFFF) + le16(0xFFFF), "capped counts")
        expectView(0, localHeader(name(0), extra: fbExtra(pad: 23)), "header 0")
        for i in [1, 2, 255, 65_535, 65_536, n - 1] {
            expectView(64 * i + 18, localHeader(name(i), extra: fbExtra(pad: 5)), "header \(i)")
            #expect(file.crcSlots[i].data == 64 * (i + 1)..<64 * (i + 1) + 2)
            #expect(file.crcSlots[i].fieldOffsets == [64 * (i + 1) + 2 + 4, directoryOffset + 53 * i + 16])
            expectView(directoryOffset + 53 * i, centralEntry(name(i), size32: 2, offset32: 64 * i + 18, extra: []), "central entry \(i)")
        }
    }
}
