import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// Splicing source bytes under read leases: which bytes are handed to the
/// kernel, and that a writer of a leased source waits for the reads using it
/// and finds every later read failed. The temporary directory is on the
/// machine's local disk (ext4 here), where leases hold.
@Suite(.serialized) struct SourceLeaseTests {
    typealias Fixture = ExtentReadTests

    /// A source of `count` bytes, byte i = i % 251.
    static func source(_ dir: Fixture.TemporaryDirectory, _ name: String, count: Int) throws -> SourceFile {
        try dir.write(name, (0..<count).map { UInt8($0 % 251) })
        return try SourceFile(directory: dir.path, name: name)
    }

    @Test func longRunsAreSplicedNarrowRowsCopied() throws {
        let dir = try Fixture.TemporaryDirectory()
        let file = try Self.source(dir, "a.bin", count: 1 << 20)
        // 128 KiB of whole rows from 4096, then 64 rows of 256 bytes 1 KiB apart
        // from 600,000 (narrow: copied), then a 4-byte literal.
        // (bf16 to bf16: bytes pass unchanged; counts are in 2-byte elements.)
        let whole = SliceExtent(fileIndex: 0, offset: 4096, rowCount: 1, rowElements: 64 << 10, rowStride: 128 << 10,
                                sourceDType: .bfloat16, outputDType: .bfloat16)
        let narrow = SliceExtent(fileIndex: 0, offset: 600_000, rowCount: 64, rowElements: 128, rowStride: 1024,
                                 sourceDType: .bfloat16, outputDType: .bfloat16)
        let virtual = VirtualFile(extents: [.slice(whole), .slice(narrow), .literal([1, 2, 3, 4])])
        let reader = ExtentReader(sources: [file])
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        reader.startRequest(leases: nil)
        defer { reader.endRequest() }
        let segments = try reader.segments(of: virtual, range: 100..<virtual.size, buffer: buffer, splice: { _ in true })
        #expect(reader.requestSources.map(\.index) == [0])
        let descriptor = try #require(reader.splicedFrom.first?.descriptor.rawValue)
        let expectedSegments: [ReadSegment] = [.source(descriptor: descriptor, offset: 4096 + 100, count: (128 << 10) - 100),
                                               .buffer(0..<64 * 256 + 4)]
        #expect(segments == expectedSegments)
        var expected: [UInt8] = []
        for row in 0..<64 {
            let start = 600_000 + row * 1024
            expected += (start..<start + 256).map { UInt8($0 % 251) }
        }
        #expect(Array(buffer[0..<64 * 256]) == expected)
        #expect(Array(buffer[64 * 256..<64 * 256 + 4]) == [1, 2, 3, 4])
        // Told not to splice this source: everything is copied.
        let copied = try reader.segments(of: virtual, range: 0..<virtual.size, buffer: buffer, splice: { _ in false })
        #expect(copied == [.buffer(0..<virtual.size)])
        let firstBytes: [UInt8] = (4096..<4104).map { UInt8($0 % 251) }
        #expect(Array(buffer[0..<8]) == firstBytes)
    }

    @Test func aWriterWaitsForTheReadsUsingALeasedSource() throws {
        let leases = try #require(ReadLeases.shared)
        let dir = try Fixture.TemporaryDirectory()
        let file = try Self.source(dir, "a.bin", count: 1 << 16)
        let handle = try file.open()
        #expect(handle.leased(leases))
        #expect(handle.leaseDescription == "leased")
        #expect(handle.startUse())  // a read in flight
        let opened = Locked(false)
        let writer = Thread {
            let fd = open(file.path, O_WRONLY)
            opened.withLock { $0 = true }
            if fd >= 0 { close(fd) }
        }
        writer.start()
        // The break is marked at once; the writer stays out while the read is in flight.
        var waited = 0
        while handle.change() == nil && waited < 5000 { usleep(1000); waited += 1 }
        #expect(handle.change() == OpenSourceFile.leaseBreak)
        usleep(300_000)
        #expect(!opened.withLock { $0 }, "the writer got in while a read used the source")
        #expect(!handle.startUse(), "a read started after the break")
        handle.endUse()
        waited = 0
        while !opened.withLock({ $0 }) && waited < 5000 { usleep(1000); waited += 1 }
        #expect(opened.withLock { $0 }, "the writer still waits after the last read ended")
        #expect(handle.leaseDescription == "lease broken")
    }

    @Test func aMountFailsEveryReadAfterABreak() throws {
        let dir = try Fixture.TemporaryDirectory()
        let checkpoint = try Fixture.shardedCheckpoint(dir)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: LayoutOptions(tpSize: 1, ppSize: 2))
        let fs = MountedFileSystem(checkpoint: checkpoint, files: plan.virtualFiles(), maximumRead: 4096, prefetch: nil)
        let model = try #require(fs.tree.lookup(parent: FileTree.rootInode, name: "model")).inode
        let pp1 = try #require(fs.tree.lookup(parent: model, name: "dp_rank_00_tp_rank_00_pp_rank_01.pt")).inode
        let second = try #require(checkpoint.files.firstIndex { $0.name == "model-00002-of-00002.safetensors" })
        #expect(throws: Never.self) { try fs.read(pp1, offset: 0, count: 4096, allowSplice: true) { _, _ in 0 }.get() }
        #expect(try checkpoint.files[second].open().leaseDescription == "leased")
        // Opened for writing, nothing written: the open alone breaks the lease.
        let fd = open(checkpoint.files[second].path, O_RDWR)
        #expect(fd >= 0)
        close(fd)
        #expect(fs.watch.problem(second) == OpenSourceFile.leaseBreak)
        guard case let .failure(.sourceChanged(source, problem)) = fs.read(pp1, offset: 0, count: 100, allowSplice: true, reply: { _, _ in 0 }) else {
            Issue.record("a read after the break must fail")
            return
        }
        #expect(source == "model-00002-of-00002.safetensors")
        #expect(problem == OpenSourceFile.leaseBreak)
        #expect(fs.sourceServing.leasesBroken >= 1)
    }

    @Test func leasesAreTakenOnlyWhereEveryWriterMeetsThem() throws {
        let dir = try Fixture.TemporaryDirectory()
        let file = try Self.source(dir, "a.bin", count: 16)
        #expect(ReadLeases.fileSystemWithoutLeases(try file.open().descriptor.rawValue) == nil)  // ext4 or tmpfs
        let proc = open("/proc/self/status", O_RDONLY)
        defer { close(proc) }
        #expect(ReadLeases.fileSystemWithoutLeases(proc) == "a file system of type 0x9fa0")
    }

    @Test func aFileOpenForWritingIsUnleasedAndCopied() throws {
        let leases = try #require(ReadLeases.shared)
        let dir = try Fixture.TemporaryDirectory()
        let file = try Self.source(dir, "a.bin", count: 1 << 16)
        let writer = open(file.path, O_WRONLY)
        defer { close(writer) }
        let handle = try file.open()
        #expect(!handle.leased(leases))
        #expect(handle.leaseDescription == "unleased: open for writing elsewhere")
    }
}
