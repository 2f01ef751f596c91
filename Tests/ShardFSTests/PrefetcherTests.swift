import Foundation
import Testing
@testable import ShardFS

/// Which source bytes a file range needs (computed by hand from the slice
/// geometry), and the prefetcher that requests them ahead of readers: what it
/// asks storage for, that it stops for closed files and stays bounded.
@Suite struct PrefetcherTests {
    // MARK: source ranges

    @Test func contiguousSliceMapsOutputBytesOneToOne() {
        let slice = SliceExtent(fileIndex: 3, offset: 1000, rowCount: 1, rowElements: 50, rowStride: 100,
                                sourceDType: .bfloat16, outputDType: .bfloat16)
        #expect(slice.sourceRanges(ofOutput: 10..<20) == [SourceRange(fileIndex: 3, offset: 1010, count: 10)])
        #expect(slice.sourceRanges(ofOutput: 5..<5) == [])
    }

    @Test func convertedSliceMapsWholeElements() {
        // bf16 -> f32: output bytes 6..<14 are elements 1 (its upper half) to 3 -> source bytes 2..<8.
        let slice = SliceExtent(fileIndex: 0, offset: 64, rowCount: 1, rowElements: 8, rowStride: 16,
                                sourceDType: .bfloat16, outputDType: .float32)
        #expect(slice.sourceRanges(ofOutput: 6..<14) == [SourceRange(fileIndex: 0, offset: 66, count: 6)])
    }

    @Test func columnCutIsOneSpanFromFirstToLastByte() {
        // 4 rows of 2 bf16 (4 bytes) every 16 bytes.
        let slice = SliceExtent(fileIndex: 1, offset: 100, rowCount: 4, rowElements: 2, rowStride: 16,
                                sourceDType: .bfloat16, outputDType: .bfloat16)
        #expect(slice.sourceRanges(ofOutput: 0..<16) == [SourceRange(fileIndex: 1, offset: 100, count: 3 * 16 + 4)])
        // Packed bytes 6..<10: row 1 from its byte 2 to row 2 up to its byte 2.
        #expect(slice.sourceRanges(ofOutput: 6..<10) == [SourceRange(fileIndex: 1, offset: 118, count: 16)])
    }

    @Test func rowsFarApartAreAskedForOneByOne() {
        let stride = 1 << 20
        let slice = SliceExtent(fileIndex: 0, offset: 8, rowCount: 3, rowElements: 4, rowStride: stride,
                                sourceDType: .float32, outputDType: .float32)
        #expect(slice.sourceRanges(ofOutput: 4..<40) == [
            SourceRange(fileIndex: 0, offset: 12, count: 12),
            SourceRange(fileIndex: 0, offset: 8 + stride, count: 16),
            SourceRange(fileIndex: 0, offset: 8 + 2 * stride, count: 8),
        ])
    }

    @Test func fileRangesSkipLiteralsAndMergeNeighbours() {
        let a = SliceExtent(fileIndex: 0, offset: 0, rowCount: 1, rowElements: 8, rowStride: 16, sourceDType: .bfloat16, outputDType: .bfloat16)
        let b = SliceExtent(fileIndex: 0, offset: 16, rowCount: 1, rowElements: 8, rowStride: 16, sourceDType: .bfloat16, outputDType: .bfloat16)
        let c = SliceExtent(fileIndex: 1, offset: 0, rowCount: 1, rowElements: 8, rowStride: 16, sourceDType: .bfloat16, outputDType: .bfloat16)
        let file = VirtualFile(extents: [.literal([1, 2, 3]), .slice(a), .slice(b), .literal([4]), .slice(c)])
        // File bytes: 0..<3 literal, 3..<19 a, 19..<35 b, 35 literal, 36..<52 c.
        #expect(file.sourceRanges(of: 0..<52) == [SourceRange(fileIndex: 0, offset: 0, count: 32), SourceRange(fileIndex: 1, offset: 0, count: 16)])
        // File byte 10 is a's byte 7, the upper half of its element 3 (bytes 6..<8).
        #expect(file.sourceRanges(of: 10..<40) == [SourceRange(fileIndex: 0, offset: 6, count: 26), SourceRange(fileIndex: 1, offset: 0, count: 4)])
    }

    // MARK: the prefetcher

    /// Files of `size` bytes each, the i-th one contiguous source bytes
    /// [i * size, (i + 1) * size) of source 0, at `model/f<i>` (inode i + 3).
    static func tree(files: Int, size: Int) -> FileTree {
        FileTree(files: (0..<files).map { index in
            let slice = SliceExtent(fileIndex: 0, offset: index * size, rowCount: 1, rowElements: size / 2, rowStride: size,
                                    sourceDType: .bfloat16, outputDType: .bfloat16)
            return ("model/f\(String(format: "%03d", index))", PlannedFile(VirtualFile(extents: [.slice(slice)])))
        })
    }

    /// Records what the prefetcher asks for; `gate` (when set) holds every
    /// request until opened; `entered` is signalled as each request arrives
    /// (before the gate), so a test knows a worker holds one.
    final class Recorder: Sendable {
        let requests = Locked<[SourceRange]>([])
        let gate = Locked<DispatchSemaphore?>(nil)
        let entered = DispatchSemaphore(value: 0)

        func advise(_ target: PrefetchTarget) {
            entered.signal()
            if let gate = gate.withLock({ $0 }) {
                gate.wait()
                gate.signal()
            }
            if case let .source(range) = target { requests.withLock { $0.append(range) } }
        }

        /// Bytes asked for, per source offset, merged.
        var covered: [Range<Int>] {
            let sorted = requests.withLock { $0 }.map { $0.offset..<$0.end }.sorted { $0.lowerBound < $1.lowerBound }
            var merged: [Range<Int>] = []
            for range in sorted {
                if let last = merged.last, range.lowerBound <= last.upperBound {
                    merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
                } else {
                    merged.append(range)
                }
            }
            return merged
        }
    }

    static func prefetcher(_ tree: FileTree, window: Int, recorder: Recorder) -> Prefetcher {
        var options = Prefetcher.Options()
        options.window = window
        return prefetcher(tree, options: options, recorder: recorder)
    }

    /// A prefetcher over `tree` (one source, as large as all files) whose
    /// requests go to `recorder`.
    static func prefetcher(_ tree: FileTree, options: Prefetcher.Options, recorder: Recorder) -> Prefetcher {
        let sourceSize = tree.nodes.reduce(0) { $0 + ($1.isDirectory ? 0 : $1.size) }
        return Prefetcher(tree: tree, sourceSizes: [sourceSize], options: options,
                          targets: { inode, range in
                              guard case let .file(file)? = tree.node(inode)?.kind else { return [] }
                              return file.make().sourceRanges(of: range).map { .source($0) }
                          },
                          advise: { recorder.advise($0) })
    }

    /// One worker, the whole file requested at open, and every request held
    /// at `gate` until the test signals it.
    static func heldOneWorker(_ tree: FileTree, window: Int) -> (Prefetcher, Recorder, DispatchSemaphore) {
        let recorder = Recorder()
        let gate = DispatchSemaphore(value: 0)
        recorder.gate.withLock { $0 = gate }
        var options = Prefetcher.Options()
        options.window = window
        options.initialWindow = window
        options.workers = 1
        return (prefetcher(tree, options: options, recorder: recorder), recorder, gate)
    }

    /// Waits (up to 5 s) for `condition`, polled.
    static func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<500 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    static let granule = Prefetcher.granule

    @Test func openingAFileRequestsItsFirstWindowAndReadsMoveItOn() {
        let size = 64 * Self.granule, window = 8 * Self.granule
        let tree = Self.tree(files: 3, size: size)
        let recorder = Recorder()
        let prefetcher = Self.prefetcher(tree, window: window, recorder: recorder)
        defer { prefetcher.stop() }
        let second: UInt64 = 4  // model/f001: source bytes [size, 2 size)
        prefetcher.opened(second)
        #expect(Self.eventually { recorder.covered == [size..<size + window] })
        // A read inside the window, not far enough to need more: nothing new.
        prefetcher.read(second, offset: 0, count: Self.granule)
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.covered == [size..<size + window])
        // A read at 4 granules: the window moves to 12 granules.
        prefetcher.read(second, offset: 3 * Self.granule, count: Self.granule)
        #expect(Self.eventually { recorder.covered == [size..<size + 12 * Self.granule] })
        // A jump near the end, then on from there: requested up to the end
        // of the file, never past it.
        prefetcher.read(second, offset: size - 2 * Self.granule, count: Self.granule)
        prefetcher.read(second, offset: size - Self.granule, count: Self.granule)
        #expect(Self.eventually { recorder.covered == [size..<size + 12 * Self.granule, size + size - Self.granule..<2 * size] })
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.covered.allSatisfy { $0.upperBound <= 2 * size })
    }

    @Test func theWindowGrowsWithSequentialReadsAndShrinksAtAJump() {
        let g = Self.granule, size = 256 * g
        let tree = Self.tree(files: 1, size: size)
        let recorder = Recorder()
        var options = Prefetcher.Options()
        options.window = 32 * g
        options.initialWindow = 4 * g
        let prefetcher = Self.prefetcher(tree, options: options, recorder: recorder)
        defer { prefetcher.stop() }
        prefetcher.opened(3)
        #expect(Self.eventually { recorder.covered == [0..<4 * g] })
        // Sequential reads double the window: 8, 16, 32 granules past each read's end.
        prefetcher.read(3, offset: 0, count: g)        // lastEnd 0 == 0: 8 g past 1 g
        #expect(Self.eventually { recorder.covered == [0..<9 * g] })
        prefetcher.read(3, offset: g, count: g)        // 16 g past 2 g
        #expect(Self.eventually { recorder.covered == [0..<18 * g] })
        prefetcher.read(3, offset: 2 * g, count: g)    // 32 g (the most) past 3 g
        #expect(Self.eventually { recorder.covered == [0..<35 * g] })
        // One more granule is less than a quarter window: nothing new yet.
        prefetcher.read(3, offset: 3 * g, count: g)
        // A jump: nothing read ahead; going on from there: 4 granules past that read.
        prefetcher.read(3, offset: 200 * g, count: g)
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.covered == [0..<35 * g])
        prefetcher.read(3, offset: 201 * g, count: g)
        #expect(Self.eventually { recorder.covered == [0..<35 * g, 201 * g..<206 * g] })  // from where the reader is
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.covered == [0..<35 * g, 201 * g..<206 * g])
    }

    @Test func bytesAlreadyRequestedForASiblingAreNotAskedForAgain() {
        // Two files over the same source bytes (as sibling ranks share a span).
        let window = 4 * Self.granule
        let slice = SliceExtent(fileIndex: 0, offset: 0, rowCount: 1, rowElements: window / 2, rowStride: window,
                                sourceDType: .bfloat16, outputDType: .bfloat16)
        let tree = FileTree(files: [("a/x", PlannedFile(VirtualFile(extents: [.slice(slice)]))), ("b/y", PlannedFile(VirtualFile(extents: [.slice(slice)])))])
        let recorder = Recorder()
        let prefetcher = Self.prefetcher(tree, window: window, recorder: recorder)
        defer { prefetcher.stop() }
        let x = tree.node(path: "a/x")!.inode, y = tree.node(path: "b/y")!.inode
        prefetcher.opened(x)
        #expect(Self.eventually { recorder.covered == [0..<window] })
        prefetcher.opened(y)
        #expect(Self.eventually { prefetcher.streamCount == 2 && recorder.requests.withLock { $0.count } == 1 })
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.requests.withLock { $0 } == [SourceRange(fileIndex: 0, offset: 0, count: window)])
    }

    @Test func aFileClosedMidReadStopsItsPrefetchAndFreesItsState() {
        let size = 256 * Self.granule
        let tree = Self.tree(files: 1, size: size)
        // The whole file at once, handed over piece by piece.
        let (prefetcher, recorder, gate) = Self.heldOneWorker(tree, window: size)
        defer { prefetcher.stop() }
        let inode: UInt64 = 3
        prefetcher.opened(inode)
        #expect(prefetcher.openFiles == 1)
        recorder.entered.wait()  // the worker now holds its first request
        prefetcher.closed(inode)
        #expect(prefetcher.streamCount == 0)
        #expect(prefetcher.openFiles == 0)
        gate.signal()
        #expect(prefetcher.waitUntilIdle())
        // Only the piece in hand when the file closed was asked for.
        #expect(recorder.requests.withLock { $0 } == [SourceRange(fileIndex: 0, offset: 0, count: Prefetcher.fileBytesPerPiece)])
    }

    @Test func filesReadAtOnceMoveOnTogetherPieceByPiece() {
        let piece = Prefetcher.fileBytesPerPiece, size = 3 * piece
        let tree = Self.tree(files: 2, size: size)
        let (prefetcher, recorder, gate) = Self.heldOneWorker(tree, window: size)
        defer { prefetcher.stop() }
        prefetcher.opened(3)  // f000: source [0, size)
        recorder.entered.wait()  // its first piece is in hand, the rest queued behind it
        prefetcher.opened(4)  // f001: source [size, 2 size)
        gate.signal()
        #expect(Self.eventually { recorder.requests.withLock { $0.count } == 6 })
        // f000's second piece was queued before f001 opened; then they alternate.
        #expect(recorder.requests.withLock { $0 }.map(\.offset) == [0, piece, size, 2 * piece, size + piece, size + 2 * piece])
    }

    @Test func whatTheReaderHasPassedIsNotReadAhead() {
        let piece = Prefetcher.fileBytesPerPiece, size = 4 * piece
        let tree = Self.tree(files: 1, size: size)
        let (prefetcher, recorder, gate) = Self.heldOneWorker(tree, window: size)
        defer { prefetcher.stop() }
        prefetcher.opened(3)
        recorder.entered.wait()  // piece 0 in hand
        // The reader races ahead into piece 2 before the worker is free.
        prefetcher.read(3, offset: 2 * piece + 10, count: 100)
        gate.signal()
        #expect(Self.eventually { recorder.requests.withLock { $0.count } == 3 })
        #expect(prefetcher.waitUntilIdle())
        // Piece 1 is skipped: read ahead from where the reader is.
        #expect(recorder.requests.withLock { $0 }.map(\.offset) == [0, 2 * piece + 10, 3 * piece + 10])
    }

    @Test func manyOpenFilesKeepOneRecordEachAndNoneOnceClosed() {
        let files = 2000, size = 2 * Self.granule
        let tree = Self.tree(files: files, size: size)
        let recorder = Recorder()
        let gate = DispatchSemaphore(value: 0)
        recorder.gate.withLock { $0 = gate }  // nothing is handed over while they are open
        let prefetcher = Self.prefetcher(tree, window: size, recorder: recorder)
        defer { prefetcher.stop() }
        let inodes = (0..<files).map { UInt64($0 + 3) }
        // Opened in a scattered order (no directory look-ahead), some twice,
        // and read many times: one record per file, whatever the count of requests.
        for inode in inodes.reversed() { prefetcher.opened(inode) }
        for inode in inodes.prefix(100) { prefetcher.opened(inode) }
        for _ in 0..<10 { for inode in inodes { prefetcher.read(inode, offset: 0, count: 4096) } }
        #expect(prefetcher.streamCount == files)
        #expect(prefetcher.openFiles == files)
        for inode in inodes { prefetcher.closed(inode) }
        #expect(prefetcher.streamCount == 100)  // opened twice, closed once
        for inode in inodes.prefix(100) { prefetcher.closed(inode) }
        #expect(prefetcher.streamCount == 0)
        #expect(prefetcher.queuedCount == 0)
        gate.signal()
        // At most the files being handed over when they closed were asked for.
        #expect(recorder.requests.withLock { $0.count } <= prefetcher.options.workers)
    }

    @Test func filesReadInDirectoryOrderPullInTheNextOnes() {
        let size = 2 * Self.granule
        let tree = Self.tree(files: 10, size: size)
        let recorder = Recorder()
        let prefetcher = Self.prefetcher(tree, window: 4 * size, recorder: recorder)
        defer { prefetcher.stop() }
        // Not in order (f000 then f005): each file alone.
        prefetcher.opened(3)
        prefetcher.opened(8)
        #expect(Self.eventually { recorder.covered == [0..<size, 5 * size..<6 * size] })
        #expect(prefetcher.waitUntilIdle())
        #expect(recorder.covered == [0..<size, 5 * size..<6 * size])
        // f006 right after f005: f006 and the three files after it (the window's worth).
        prefetcher.opened(9)
        #expect(Self.eventually { recorder.covered == [0..<size, 5 * size..<10 * size] })
        #expect(Self.eventually { prefetcher.streamCount == 3 })  // f000, f005, f006 still open
    }
}

/// Which mapped chunks a gather leaves mapped and which it releases.
@Suite struct MappedChunksTests {
    @Test func theLeastRecentlyUsedChunksAreReleasedWithinTheirMapping() {
        var chunks = MappedChunks(chunkBytes: 100, limit: 4)
        // Mapping A (1000 bytes): chunks 0-1, then 2; mapping B (250 bytes): chunk 2 (its last, 50 bytes).
        #expect(chunks.touch(0..<150, mapping: 0xA000, size: 1000).isEmpty)
        #expect(chunks.touch(200..<210, mapping: 0xA000, size: 1000).isEmpty)
        #expect(chunks.touch(220..<250, mapping: 0xB000, size: 250).isEmpty)
        // A's chunk 0 used again: now B's chunk and A's chunk 1 are the oldest... A's 1 (clock 1), A's 2 (2), B's 2 (3), A's 0 (4).
        #expect(chunks.touch(10..<20, mapping: 0xA000, size: 1000).isEmpty)
        // A fifth chunk: over the limit of 4, released down to 3 (= 4 * 3 / 4): the two oldest, A's 1 then A's 2.
        let released = chunks.touch(900..<1000, mapping: 0xA000, size: 1000)
        #expect(released.map(\.mapping) == [0xA000, 0xA000])
        #expect(released.map(\.bytes) == [100..<200, 200..<300])
        #expect(chunks.lastUse.count == 3)
        // B's chunk next: released up to B's end only, not a byte past it.
        _ = chunks.touch(500..<510, mapping: 0xA000, size: 1000)
        let next = chunks.touch(600..<610, mapping: 0xA000, size: 1000)
        #expect(next.map(\.mapping) == [0xB000, 0xA000])
        #expect(next.map(\.bytes) == [200..<250, 0..<100])
    }

    @Test func aForgottenMappingIsNeverReleased() {
        var chunks = MappedChunks(chunkBytes: 100, limit: 2)
        #expect(chunks.touch(0..<200, mapping: 0xA000, size: 1000).isEmpty)
        chunks.forget(mapping: 0xA000)
        #expect(chunks.lastUse.isEmpty)
        // Over the limit of 2 with B alone: released down to 1 (2 * 3 / 4),
        // B's two oldest chunks, never one of A's.
        #expect(chunks.touch(0..<200, mapping: 0xB000, size: 1000).isEmpty)
        let released = chunks.touch(200..<300, mapping: 0xB000, size: 1000)
        #expect(released.map(\.mapping) == [0xB000, 0xB000])
        // Touched in one call, the two share a clock: their order is the dictionary's.
        #expect(released.map(\.bytes).sorted { $0.lowerBound < $1.lowerBound } == [0..<100, 100..<200])
    }
}
