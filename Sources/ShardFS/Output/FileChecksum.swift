import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Reads a real file back and computes its CRC-32: what proves a persisted
/// copy holds the bytes its manifest entry claims before the mount serves it,
/// or a converted file is kept by a later run.
enum FileChecksum {
    /// The buffer a reader needs: memory stays bounded whatever the file.
    static let bufferSize = 8 << 20

    /// The CRC-32 of the file at `path`, read through `buffer`; an error if
    /// it is not `expectedSize` bytes. `isCancelled` is polled between reads.
    static func crc32(of path: String, expectedSize: Int, buffer: UnsafeMutableRawBufferPointer,
                      isCancelled: () -> Bool = { false }) throws(ShardFSError) -> UInt32 {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) } catch {
            throw ShardFSError.io(path: path, operation: "open", error: error)
        }
        defer { try? fd.close() }
        var crc = CRC32()
        var offset = 0
        while true {
            if isCancelled() { throw ShardFSError.io(path: path, operation: "read (interrupted)", errno: EINTR) }
            let n: Int
            do { n = try fd.read(fromAbsoluteOffset: Int64(offset), into: buffer) } catch {
                throw ShardFSError.io(path: path, operation: "read", error: error)
            }
            if n == 0 { break }
            crc.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            offset += n
        }
        guard offset == expectedSize else {
            throw ShardFSError.badSource(file: path, reason: "is \(offset) bytes, its manifest entry says \(expectedSize)")
        }
        return crc.value
    }
}
