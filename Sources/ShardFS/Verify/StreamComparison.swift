#if canImport(Glibc)
import Glibc
#endif

/// The two chunk buffers one verifying thread compares in: memory per
/// thread is these, whatever the tensor sizes.
final class ComparisonBuffers {
    let expected: UnsafeMutableRawBufferPointer
    let found: UnsafeMutableRawBufferPointer

    /// `chunkBytes` is rounded down to a multiple of 8 (every dtype's size).
    init(chunkBytes: Int) {
        let size = max(8, chunkBytes / 8 * 8)
        expected = .allocate(byteCount: size, alignment: 64)
        found = .allocate(byteCount: size, alignment: 64)
    }

    var count: Int { expected.count }

    deinit {
        expected.deallocate()
        found.deallocate()
    }
}

/// A read that failed while comparing, and on which side: the expected
/// bytes come from the source, the found ones from the file checked.
struct StreamReadFailure: Error {
    enum Side { case expected, found }
    let side: Side
    let error: ShardFSError
}

/// Compares two byte streams of one length chunk by chunk, bit for bit.
enum StreamComparison {
    /// Fills the buffer with bytes `range` of a stream.
    typealias Read = (_ range: Range<Int>, _ into: UnsafeMutableRawBufferPointer) throws(ShardFSError) -> Void

    /// The first element (of `dtype`) where the streams differ, or nil.
    /// With `crc`, every found byte is folded into it, also past the first
    /// difference (the expected side is then no longer read). `progress` is
    /// told of every chunk's byte count.
    static func firstDifference(byteCount: Int, dtype: DType, buffers: ComparisonBuffers,
                                expected: Read, found: Read, crc: inout RecordCRC?,
                                progress: (Int) -> Void = { _ in }) throws(StreamReadFailure) -> (index: Int, expected: ElementValue, found: ElementValue)? {
        var difference: (index: Int, expected: ElementValue, found: ElementValue)?
        var offset = 0
        while offset < byteCount {
            let count = min(buffers.count, byteCount - offset)
            let range = offset..<offset + count
            let foundChunk = UnsafeMutableRawBufferPointer(rebasing: buffers.found[0..<count])
            do { try found(range, foundChunk) } catch { throw StreamReadFailure(side: .found, error: error) }
            crc?.update(UnsafeRawBufferPointer(foundChunk))
            if difference == nil {
                let expectedChunk = UnsafeMutableRawBufferPointer(rebasing: buffers.expected[0..<count])
                do { try expected(range, expectedChunk) } catch { throw StreamReadFailure(side: .expected, error: error) }
                if let at = firstDifferingByte(expectedChunk, foundChunk) {
                    let element = at / dtype.size * dtype.size
                    difference = ((offset + element) / dtype.size,
                                  ElementValue(dtype: dtype, at: expectedChunk.baseAddress! + element),
                                  ElementValue(dtype: dtype, at: foundChunk.baseAddress! + element))
                }
            }
            progress(count)
            offset += count
            if difference != nil && crc == nil {
                progress(byteCount - offset)
                break
            }
        }
        return difference
    }

    /// Index of the first byte where two equally long buffers differ.
    static func firstDifferingByte(_ a: UnsafeMutableRawBufferPointer, _ b: UnsafeMutableRawBufferPointer) -> Int? {
        guard a.count > 0, memcmp(a.baseAddress!, b.baseAddress!, a.count) != 0 else { return nil }
        // Narrow down in blocks, then bytes.
        let block = 4096
        var start = 0
        while start < a.count {
            let n = min(block, a.count - start)
            if memcmp(a.baseAddress! + start, b.baseAddress! + start, n) != 0 {
                for i in start..<start + n where a[i] != b[i] { return i }
            }
            start += n
        }
        return nil
    }

    /// The CRC-32 of bytes `range` of a file, read a chunk at a time.
    static func crc(of range: Range<Int>, buffers: ComparisonBuffers,
                    read: (Int, UnsafeMutableRawBufferPointer) throws(ShardFSError) -> Void) throws(ShardFSError) -> UInt32 {
        var crc = RecordCRC()
        var offset = range.lowerBound
        while offset < range.upperBound {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffers.found[0..<min(buffers.count, range.upperBound - offset)])
            try read(offset, chunk)
            crc.update(UnsafeRawBufferPointer(chunk))
            offset += chunk.count
        }
        return crc.value
    }
}
