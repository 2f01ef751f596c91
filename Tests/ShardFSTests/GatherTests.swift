import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// Narrow column cuts are copied from the source's mapping. A file truncated
/// under the mapping raises SIGBUS on access; the reader must turn that into
/// an error naming the file, and the process must live on.
@Suite struct GatherTests {
    @Test func truncatedSourceIsAnErrorNotACrash() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let checkpoint = try ExtentReadTests.singleFileCheckpoint(dir, .bfloat16)
        let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: LayoutOptions(tpSize: 2))
        let file = plan.virtualFiles()[0].file.make()
        // The down_proj of layer 0 is a column cut: several rows, each narrower than its stride.
        let narrow = try #require(file.extents.indices.first { index in
            if case let .slice(s) = file.extents[index] { return s.rowCount > 1 } else { return false }
        })
        guard case let .slice(slice) = file.extents[narrow] else { return }
        let reader = ExtentReader(sources: checkpoint.files)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: slice.byteCount, alignment: 64)
        defer { buffer.deallocate() }
        try reader.read(file.extents[narrow], range: 0..<slice.byteCount, into: buffer)

        #expect(truncate(checkpoint.files[0].path, 0) == 0)
        var failure: ShardFSError?
        do throws(ShardFSError) {
            try reader.read(file.extents[narrow], range: 0..<slice.byteCount, into: buffer)
        } catch {
            failure = error
        }
        #expect(failure?.description.contains("model.safetensors") == true)
        #expect(failure?.description.contains("truncated") == true)
    }
}
