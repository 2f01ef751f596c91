import Testing
@testable import ShardFS

/// ZipDirectory on real torch.save files (TorchLoadFixtureData,
/// TorchSaveFixtureData), on Python zipfile rewrites of them, and on
/// archives built field by field to be wrong in one way each.
@Suite struct ZipDirectoryTests {
    static let views = decodeBase64(TorchLoadFixtureData.views)

    /// The records of views.pt as docs/formats/pt.md orders them, with the sizes
    /// of what the generator saved (10 float32s; "1", "64", "little", "3\n",
    /// 40 digits), and offsets as the test's own zip reader finds them.
    @Test func realTorchSaveFile() throws {
        let d = try zipDirectory(Self.views)
        #expect(d.records.map(\.name) == ["views/data.pkl", "views/.format_version", "views/.storage_alignment", "views/byteorder",
                                         "views/data/0", "views/version", "views/.data/serialization_id"])
        #expect(d.records.dropFirst().map(\.size) == [1, 2, 6, 40, 2, 40])
        #expect(d.records.allSatisfy { $0.crc32 == 0 }, "torch.save with CRC-32 off writes 0")
        #expect(d.records.allSatisfy { $0.dataOffset % 64 == 0 }, "torch.save aligns record data to 64 bytes")
        let independent = try TestZip.entries(Self.views)
        #expect(d.records.map(\.dataOffset) == independent.map(\.dataOffset))
        #expect(d.records.map(\.localHeaderOffset) == independent.map(\.headerOffset))
        #expect(d.records.map(\.size) == independent.map(\.size))
        let storage = try #require(d.record(named: "views/data/0"))
        #expect((0..<10).map { element(Self.views, at: storage.dataOffset + 4 * $0, .float32) } == (0..<10).map(Double.init))
        let byteorder = try #require(d.record(named: "views/byteorder"))
        #expect(Array(Self.views[byteorder.dataOffset..<byteorder.dataOffset + 6]) == bytes("little"))
        #expect(d.record(named: "views/data/1") == nil)
    }

    /// Every embedded torch.save file, against the test's own zip reader.
    @Test func everyFixtureMatchesTheTestReader() throws {
        let literals = [TorchLoadFixtureData.module, TorchLoadFixtureData.parameters, TorchLoadFixtureData.columnMajor,
                        TorchLoadFixtureData.dtypes, TorchLoadFixtureData.viewTensor, TorchLoadFixtureData.expertInfo,
                        TorchSaveFixtureData.mixed, TorchSaveFixtureData.many, TorchSaveFixtureData.thousand,
                        TorchSaveFixtureData.shapes, TorchSaveFixtureData.xserReferences, TorchSaveFixtureData.xserInfo,
                        TorchSaveFixtureData.xserTensor]
        for literal in literals {
            let b = decodeBase64(literal)
            let d = try zipDirectory(b)
            let independent = try TestZip.entries(b)
            #expect(d.records.map(\.name) == independent.map(\.name))
            #expect(d.records.map(\.dataOffset) == independent.map(\.dataOffset))
            #expect(d.records.map(\.size) == independent.map(\.size))
        }
    }

    /// Python's zipfile: no zip64 records, real CRCs, a comment after the end record.
    @Test func pythonZipfileStoredWithComment() throws {
        let b = decodeBase64(TorchLoadFixtureData.viewsRezipped)
        let d = try zipDirectory(b)
        #expect(d.records.count == 7)
        let byteorder = try #require(d.record(named: "views/byteorder"))
        #expect(byteorder.crc32 == 0x19E3_3D85, "zlib.crc32(b'little')")
        #expect(Array(b[byteorder.dataOffset..<byteorder.dataOffset + byteorder.size]) == bytes("little"))
        #expect(Array(b.suffix(20)) == bytes("rewritten by zipfile"))
    }

    /// Sizes and header offsets of 0xFFFFFFFF come from the zip64 extra.
    @Test func zip64Extras() throws {
        var a = ZipBuilder.Entry("a/x", bytes("hello")), b = ZipBuilder.Entry("a/y", bytes("world!"))
        a.zip64 = true
        b.zip64 = true
        let d = try zipDirectory(ZipBuilder([a, b]).bytes())
        // Local header: 30 bytes + 3-byte name, then the data.
        #expect(d.records == [ZipRecord(name: "a/x", dataOffset: 33, size: 5, crc32: 0, localHeaderOffset: 0),
                              ZipRecord(name: "a/y", dataOffset: 38 + 33, size: 6, crc32: 0, localHeaderOffset: 38)])
    }

    @Test func withoutZip64EndRecord() throws {
        var builder = ZipBuilder([ZipBuilder.Entry("a/x", bytes("hello"))])
        builder.zip64End = false
        builder.comment = bytes("a comment")
        let d = try zipDirectory(builder.bytes())
        #expect(d.records == [ZipRecord(name: "a/x", dataOffset: 33, size: 5, crc32: 0, localHeaderOffset: 0)])
    }

    /// A tag is opened by parsing each of up to 60,000 files: the end of a
    /// torch.save file (no comment) is found from its last 22 bytes, never
    /// a 64 KiB search window.
    @Test func theEndOfACommentlessArchiveIsReadAlone() throws {
        var entries = [ZipBuilder.Entry("a/x", [UInt8](repeating: 1, count: 200_000))]
        entries[0].zip64 = true
        let b = ZipBuilder(entries).bytes()
        var reads: [(Int, Int)] = []
        let d = try ZipDirectory(file: "a.pt", fileSize: b.count) { (offset, count) throws(ShardFSError) in
            reads.append((offset, count))
            return Array(b[offset..<offset + count])
        }
        #expect(d.records.count == 1)
        #expect(reads.first.map { $0 == (b.count - 22, 22) } == true, "\(reads)")
        #expect(reads.allSatisfy { $0.1 < 4096 }, "\(reads)")
    }

    @Test func emptyArchive() throws {
        #expect(try zipDirectory(ZipBuilder([]).bytes()).records.isEmpty)
    }

    // MARK: Refusals

    @Test func compressedRecord() {
        let b = decodeBase64(TorchLoadFixtureData.viewsDeflated)
        let error = expectRefusal(mentioning: ["record views/data.pkl is compressed (method 8)", "stored records only"]) { () throws(ShardFSError) in
            try zipDirectory(b, file: "views.pt")
        }
        if case .badSource(let file, _)? = error { #expect(file == "views.pt") }
    }

    @Test func truncatedFile() {
        for length in [0, 10, 21, Self.views.count / 2, Self.views.count - 1] {
            expectRefusal(mentioning: ["truncated"]) { () throws(ShardFSError) in
                try zipDirectory(Array(Self.views.prefix(length)))
            }
        }
    }

    @Test func trailingBytes() {
        expectRefusal(mentioning: ["no end-of-central-directory record"]) { () throws(ShardFSError) in
            try zipDirectory(Self.views + bytes("junk"))
        }
    }

    /// The byte at `offset` of views.pt replaced.
    func viewsPatched(_ patches: [Int: [UInt8]]) -> [UInt8] {
        var b = Self.views
        for (offset, replacement) in patches { b.replaceSubrange(offset..<offset + replacement.count, with: replacement) }
        return b
    }

    @Test func badSignatures() throws {
        let entries = try TestZip.entries(Self.views)
        let directory = readLE(Self.views, Self.views.count - 22 + 16, 4)
        // A local header's signature: the record is named.
        expectRefusal(mentioning: ["record views/byteorder", "no local header signature", "byte \(entries[3].headerOffset)"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([entries[3].headerOffset: bytes("XX")]))
        }
        // The first central-directory entry's signature.
        expectRefusal(mentioning: ["central directory entry 0", "PK\\1\\2"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([directory: bytes("XX")]))
        }
        // The zip64 end record's signature (the locator points to it).
        let end64 = Self.views.count - 22 - 20 - 56
        expectRefusal(mentioning: ["no zip64 end record", "byte \(end64)"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([end64: bytes("XX")]))
        }
        // The end record's own signature.
        expectRefusal(mentioning: ["no end-of-central-directory record"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([Self.views.count - 22: bytes("XX")]))
        }
    }

    /// data.pkl's central-directory sizes grown by 64: its data then runs
    /// into the next record's local header.
    @Test func overlappingRecords() throws {
        let entries = try TestZip.entries(Self.views)
        let directory = readLE(Self.views, Self.views.count - 22 + 16, 4)
        let size = entries[0].size + 64
        let patched = viewsPatched([directory + 20: le32(size) + le32(size)])
        expectRefusal(mentioning: ["records views/data.pkl and views/.format_version overlap"]) { () throws(ShardFSError) in
            try zipDirectory(patched)
        }
        // Built: the first record's size reaches into the second's header.
        var a = ZipBuilder.Entry("a/x", bytes("hello"))
        a.sizeDelta = 10
        expectRefusal(mentioning: ["records a/x and a/y overlap"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a, ZipBuilder.Entry("a/y", bytes("world"))]).bytes())
        }
    }

    @Test func dataPastTheCentralDirectory() {
        var a = ZipBuilder.Entry("a/x", bytes("hello"))
        a.sizeDelta = 100
        expectRefusal(mentioning: ["record a/x", "run past the start of the central directory"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a]).bytes())
        }
    }

    @Test func duplicateNames() {
        expectRefusal(mentioning: ["record a/x appears twice"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([ZipBuilder.Entry("a/x", [1]), ZipBuilder.Entry("a/x", [2])]).bytes())
        }
    }

    @Test func encrypted() {
        var a = ZipBuilder.Entry("a/x", [1])
        a.flags = 0x0809
        expectRefusal(mentioning: ["record a/x is encrypted"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a]).bytes())
        }
    }

    @Test func compressedSizeDiffers() {
        var a = ZipBuilder.Entry("a/x", [1, 2, 3])
        a.packedSizeDelta = -1
        expectRefusal(mentioning: ["record a/x", "compressed size 2 differs from its size 3"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a]).bytes())
        }
    }

    @Test func localHeaderNamesAnotherRecord() {
        var a = ZipBuilder.Entry("a/x", [1])
        a.localName = Array("a/y".utf8)
        expectRefusal(mentioning: ["record a/x", "names a/y"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a]).bytes())
        }
    }

    @Test func nameNotUTF8() {
        var a = ZipBuilder.Entry("a/x", [1])
        a.name = [0x61, 0x2F, 0xFF]
        a.localName = a.name
        expectRefusal(mentioning: ["central directory entry 0", "not valid UTF-8"]) { () throws(ShardFSError) in
            try zipDirectory(ZipBuilder([a]).bytes())
        }
    }

    @Test func multiDisk() {
        var builder = ZipBuilder([ZipBuilder.Entry("a/x", [1])])
        builder.zip64End = false
        builder.disk = 1
        expectRefusal(mentioning: ["multi-disk"]) { () throws(ShardFSError) in
            try zipDirectory(builder.bytes())
        }
    }

    /// 0xFFFFFFFF in the fixed fields with no zip64 extra to resolve it.
    @Test func zip64FieldWithoutExtra() {
        let directory = readLE(Self.views, Self.views.count - 22 + 16, 4)
        expectRefusal(mentioning: ["record views/data.pkl", "0xFFFFFFFF without a zip64 extra"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([directory + 42: le32(0xFFFF_FFFF)]))
        }
    }

    /// The zip64 end record claiming two million entries.
    @Test func entryCount() {
        let end64 = Self.views.count - 22 - 20 - 56
        expectRefusal(mentioning: ["2000000"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([end64 + 24: le64(2_000_000) + le64(2_000_000)]))
        }
    }

    /// The directory's offset moved (in both end records): it no longer ends
    /// where the end records begin.
    @Test func directoryMisplaced() {
        let end64 = Self.views.count - 22 - 20 - 56, end = Self.views.count - 22
        let offset = readLE(Self.views, end64 + 48, 8)
        expectRefusal(mentioning: ["central directory", "not where the end records begin"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([end64 + 48: le64(offset - 1), end + 16: le32(offset - 1)]))
        }
        expectRefusal(mentioning: ["truncated", "central directory"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([end64 + 48: le64(offset + 1), end + 16: le32(offset + 1)]))
        }
        // Moved in one of them only.
        expectRefusal(mentioning: ["contradicts the zip64 end record"]) { () throws(ShardFSError) in
            try zipDirectory(viewsPatched([end64 + 48: le64(offset + 1)]))
        }
    }
}
