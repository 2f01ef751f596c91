import Foundation
import Testing
@testable import ShardFS

/// A tensor stored in pieces (as NxD rank files hold it) read through
/// `RowBlock.extents`: row bands, column bands, a column-major piece, reads
/// at odd offsets and dtype conversion. Every expected value is written from
/// the tensor's definition, element (i, j) = 100 * i + j.
@Suite struct TiledTensorTests {
    static func float32Bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value in le32(Int(value.bitPattern)) }
    }

    /// A 4x6 float32 tensor: columns 0..<3 row-major at byte 0 (row stride 12),
    /// columns 3..<6 column-major at byte 64 (stored [3, 4]: a row stride of
    /// one element, an element stride of 4 elements).
    static func columnBands(_ dir: ExtentReadTests.TemporaryDirectory) throws -> (SourceFile, SourceTensor) {
        var file = [UInt8](repeating: 0xAA, count: 64 + 48)
        for i in 0..<4 {
            for j in 0..<3 {
                file.replaceSubrange((i * 12 + j * 4)..<(i * 12 + j * 4 + 4), with: float32Bytes([Float(100 * i + j)]))
                let at = 64 + j * 16 + i * 4
                file.replaceSubrange(at..<at + 4, with: float32Bytes([Float(100 * i + j + 3)]))
            }
        }
        try dir.write("pieces.bin", file)
        let source = try SourceFile(directory: dir.path, name: "pieces.bin")
        let tensor = SourceTensor(name: "w", dtype: .float32, shape: [4, 6], tiles: [
            TensorTile(rows: 0..<4, columns: 3..<6, fileIndex: 0, offset: 64, rowStride: 4, elementStride: 16),
            TensorTile(rows: 0..<4, columns: 0..<3, fileIndex: 0, offset: 0, rowStride: 12, elementStride: 4),
        ])
        return (source, tensor)
    }

    static func expected(rows: Range<Int>, columns: Range<Int>) -> [Float] {
        rows.flatMap { i in columns.map { j in Float(100 * i + j) } }
    }

    @Test func columnBandsStitchRowByRow() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let (source, tensor) = try TiledTensorTests.columnBands(dir)
        for (rows, columns) in [(0..<4, 0..<6), (1..<3, 2..<5), (0..<4, 3..<6), (2..<3, 0..<2)] {
            let extents = RowBlock(tensor: tensor, rows: rows, columns: columns).extents(outputDType: .float32)
            let file = VirtualFile(extents: extents)
            let whole = try readWhole(file, sources: [source])
            let want = TiledTensorTests.float32Bytes(TiledTensorTests.expected(rows: rows, columns: columns))
            expectSameBytes(whole, want, "rows \(rows) columns \(columns)")
            // Every split point, including ones inside an element.
            let reader = ExtentReader(sources: [source])
            for cut in 0..<file.size {
                var out = [UInt8](repeating: 0, count: file.size - cut)
                try out.withUnsafeMutableBytes { buffer in
                    var failure: ShardFSError?
                    do throws(ShardFSError) { _ = try reader.read(file, at: cut, into: buffer) } catch { failure = error }
                    if let failure { throw failure }
                }
                expectSameBytes(out, Array(want[cut...]), "from byte \(cut)")
            }
        }
    }

    @Test func rowBandInsideOneTileIsASlice() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let (_, tensor) = try TiledTensorTests.columnBands(dir)
        let extents = RowBlock(tensor: tensor, rows: 1..<3, columns: 0..<2).extents(outputDType: .float32)
        #expect(extents == [.slice(SliceExtent(fileIndex: 0, offset: 12, rowCount: 2, rowElements: 2, rowStride: 12,
                                               sourceDType: .float32, outputDType: .float32))])
    }

    @Test func rowBandsFromTwoPiecesAndConversion() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        // A 4x2 tensor in two row bands, stored in the opposite order.
        try dir.write("bands.bin", TiledTensorTests.float32Bytes([200, 201, 300, 301, 0, 1, 100, 101]))
        let source = try SourceFile(directory: dir.path, name: "bands.bin")
        let tensor = SourceTensor(name: "w", dtype: .float32, shape: [4, 2], tiles: [
            TensorTile(rows: 2..<4, columns: 0..<2, fileIndex: 0, offset: 0, rowStride: 8, elementStride: 4),
            TensorTile(rows: 0..<2, columns: 0..<2, fileIndex: 0, offset: 16, rowStride: 8, elementStride: 4),
        ])
        let extents = RowBlock(whole: tensor).extents(outputDType: .float64)
        #expect(extents.count == 2)
        let got = try readWhole(VirtualFile(extents: extents), sources: [source])
        let want = [0.0, 1, 100, 101, 200, 201, 300, 301].flatMap { le64(Int(bitPattern: UInt(($0 as Double).bitPattern))) }
        expectSameBytes(got, want, "float64 of the whole tensor")
    }

    @Test func stitchedSourceRangesCoverTheRowsRead() throws {
        let stitched = StitchedExtent(rowCount: 4, segments: [
            .init(fileIndex: 0, offset: 0, rowStride: 12, elementStride: 4, elements: 3),
            .init(fileIndex: 1, offset: 64, rowStride: 4, elementStride: 16, elements: 3),
        ], sourceDType: .float32, outputDType: .float32)
        // Output bytes of row 1 and 2 (24 bytes a row).
        #expect(stitched.sourceRanges(ofOutput: 24..<72) == [
            SourceRange(fileIndex: 0, offset: 12, count: 24),
            SourceRange(fileIndex: 1, offset: 68, count: 2 * 16 + 4 + 4),
        ])
    }
}
