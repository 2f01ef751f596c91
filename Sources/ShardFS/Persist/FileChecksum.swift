import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Reads a real file back and computes its CRC-32: what proves a persisted
/// copy holds the bytes its manifest entry claims before the mount serves it.
enum FileChecksum {
    static func crc32(of path: String, expectedSize: Int, buffer: UnsafeMutableRawBufferPointer) throws(ShardFSError) -> UInt32 {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(FilePath(path), .readOnly, options: [.closeOnExec]) } catch {
            throw ShardFSError.io(path: path, operation: "open", error: error)
        }
        defer { try? fd.close() }
        var crc = CRC32()
        var offset = 0
        while true {
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
