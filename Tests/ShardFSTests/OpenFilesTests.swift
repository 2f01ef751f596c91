import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The budget of open source files: at most `capacity` open, the least
/// recently used closed first, reopened on demand and refused if the file
/// changed meanwhile. Expected bytes are the files' own contents as written
/// here; open counts are worked out by hand from the access order.
@Suite struct OpenFilesTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    /// `count` files `f0`..., file i holding 64 bytes of value i.
    static func files(_ dir: Dir, count: Int, budget: OpenFiles) throws -> [SourceFile] {
        try (0..<count).map { i in
            try dir.write("f\(i)", [UInt8](repeating: UInt8(i), count: 64))
            return try SourceFile(directory: dir.path, name: "f\(i)", budget: budget)
        }
    }

    @Test func evictsTheLeastRecentlyUsedAndReopens() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 2)
        let files = try Self.files(dir, count: 5, budget: budget)
        // Each file was opened to learn its identity; only the last two stay.
        #expect(budget.openCount == 2)
        #expect(budget.counts == (opened: 5, evicted: 3))
        // f4 is open: no reopening. f0 was evicted: reopened, evicting f3
        // (f4 was used more recently).
        #expect(try files[4].readBytes(at: 0, count: 4) == [4, 4, 4, 4])
        #expect(try files[0].readBytes(at: 60, count: 4) == [0, 0, 0, 0])
        #expect(budget.counts == (opened: 6, evicted: 4))
        #expect(try files[4].readBytes(at: 0, count: 1) == [4])
        #expect(budget.counts == (opened: 6, evicted: 4), "f4 stayed open")
        // Every file read again, twice round: never more than 2 open.
        for _ in 0..<2 {
            for (i, file) in files.enumerated() {
                #expect(try file.readBytes(at: 10, count: 2) == [UInt8(i), UInt8(i)])
                #expect(budget.openCount <= 2)
            }
        }
    }

    @Test func aFileChangedWhileClosedIsRefusedOnReopen() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 1)
        let files = try Self.files(dir, count: 2, budget: budget)  // f0 closed again by f1
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path + "/f0"))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([9]))
        try handle.close()
        let error = #expect(throws: ShardFSError.self) { try files[0].readBytes(at: 0, count: 4) }
        guard case let .sourceChanged(name, reason)? = error else {
            Issue.record("expected sourceChanged, got \(String(describing: error))")
            return
        }
        #expect(name == "f0")
        #expect(reason == "size changed from 64 to 65 bytes")
        // f1, open and unchanged, still reads.
        #expect(try files[1].readBytes(at: 0, count: 1) == [1])
    }

    @Test func aReplacedFileIsRefusedOnReopen() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 1)
        let files = try Self.files(dir, count: 2, budget: budget)
        try dir.write("f0.new", [UInt8](repeating: 0, count: 64))
        #expect(rename(dir.path + "/f0.new", dir.path + "/f0") == 0)
        let error = #expect(throws: ShardFSError.self) { try files[0].open() }
        #expect(error?.description.contains("replaced by another file") == true)
    }

    @Test func aHandleHeldAcrossEvictionStaysOpenUntilReleased() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 1)
        let first = try Self.files(dir, count: 1, budget: budget)[0]
        var handle: OpenSourceFile? = try first.open()
        weak let released = handle
        // A second file evicts the first from the budget while it is held.
        try dir.write("other", [7])
        let other = try SourceFile(directory: dir.path, name: "other", budget: budget)
        #expect(budget.openCount == 1)
        var byte: [UInt8] = [0]
        try byte.withUnsafeMutableBytes { try handle!.read(at: 3, into: $0) }
        #expect(byte == [0])
        handle = nil
        #expect(released == nil, "closed once the last holder let go")
        _ = other
    }

    @Test func forgottenWhenTheSourceFileGoes() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 4)
        var files: [SourceFile]? = try Self.files(dir, count: 3, budget: budget)
        #expect(budget.openCount == 3)
        files = nil
        #expect(budget.openCount == 0)
        _ = files
    }

    @Test func concurrentReadersStayWithinTheBudget() throws {
        let dir = try Dir()
        let budget = OpenFiles(capacity: 8)
        let files = try Self.files(dir, count: 100, budget: budget)
        let failures = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var random = SplitMix64(seed: UInt64(worker))
            for _ in 0..<500 {
                let i = Int.random(in: 0..<files.count, using: &random)
                if (try? files[i].readBytes(at: 0, count: 8)) != [UInt8](repeating: UInt8(i), count: 8) { failures.withLock { $0 += 1 } }
            }
        }
        #expect(failures.withLock { $0 } == 0)
        #expect(budget.openCount <= 8)
    }

    @Test func theBudgetFollowsTheSoftLimit() {
        #expect(DescriptorLimit.sourceBudget(softLimit: 1024) == 256)
        #expect(DescriptorLimit.sourceBudget(softLimit: 700) == 158)  // (700 - 384) / 2
        #expect(DescriptorLimit.sourceBudget(softLimit: 256) == 16)
        #expect(DescriptorLimit.sourceBudget(softLimit: 1 << 20) == 256)
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        #expect(DescriptorLimit.soft == Int(min(limit.rlim_max, 1 << 20)), "raised to the hard limit at first use")
    }
}
