import CLinux
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Writes a virtual file to real storage, crash-safe: under a temporary name
/// in the target directory, with the real CRC-32s filled in, fsynced, then
/// renamed over the final name and the directory fsynced. A crash at any
/// moment leaves either the complete file or none under the final name.
public struct VirtualFileWriter {
    /// Bytes moved per read/write; bounded so memory stays small whatever the file.
    public static let chunkSize = 8 << 20

    public let reader: ExtentReader
    private let buffer: UnsafeMutableRawBufferPointer

    public init(reader: ExtentReader) {
        self.reader = reader
        buffer = .allocate(byteCount: VirtualFileWriter.chunkSize, alignment: 4096)
    }

    /// Frees the chunk buffer; the writer is unusable afterwards.
    public func close() { buffer.deallocate() }

    /// The temporary name a file is written under before its rename.
    public static func temporaryPath(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(directory).\(name).shardfs-tmp-\(getpid())"
    }

    /// Writes `file` to `path`. `progress` is told of every chunk written;
    /// `isCancelled` is polled between chunks.
    public func write(_ file: VirtualFile, to path: String,
                      progress: (Int) -> Void = { _ in },
                      isCancelled: () -> Bool = { false }) throws(ShardFSError) {
        let temporary = VirtualFileWriter.temporaryPath(for: path)
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(temporary), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw ShardFSError.io(path: temporary, operation: "create", error: error)
        }
        var renamed = false
        defer {
            try? fd.close()
            if !renamed { unlink(temporary) }
        }

        var crcs = [CRC32](repeating: CRC32(), count: file.crcSlots.count)
        var firstOpenSlot = 0
        var offset = 0
        while offset < file.size {
            if isCancelled() { throw ShardFSError.io(path: path, operation: "write (interrupted)", errno: EINTR) }
            let count = try reader.read(file, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, file.size - offset)]))
            let chunk = offset..<offset + count
            while firstOpenSlot < file.crcSlots.count, file.crcSlots[firstOpenSlot].data.upperBound <= chunk.lowerBound {
                firstOpenSlot += 1
            }
            var slot = firstOpenSlot
            while slot < file.crcSlots.count, file.crcSlots[slot].data.lowerBound < chunk.upperBound {
                let overlap = file.crcSlots[slot].data.clamped(to: chunk)
                if !overlap.isEmpty {
                    crcs[slot].update(UnsafeRawBufferPointer(rebasing: buffer[(overlap.lowerBound - offset)..<(overlap.upperBound - offset)]))
                }
                slot += 1
            }
            do {
                _ = try fd.writeAll(toAbsoluteOffset: Int64(offset), UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            } catch {
                throw ShardFSError.io(path: temporary, operation: "write", error: error)
            }
            // Start writeback now, so dirty pages do not pile up and the final
            // fsync waits for the tail only, not the whole file.
            _ = shardfs_start_writeback(fd.rawValue, offset, count)
            offset += count
            progress(count)
        }
        for (slot, crc) in zip(file.crcSlots, crcs) {
            let bytes = withUnsafeBytes(of: crc.value.littleEndian) { Array($0) }
            for field in slot.fieldOffsets {
                do {
                    _ = try fd.writeAll(toAbsoluteOffset: Int64(field), bytes)
                } catch {
                    throw ShardFSError.io(path: temporary, operation: "write", error: error)
                }
            }
        }
        guard fsync(fd.rawValue) == 0 else { throw ShardFSError.io(path: temporary, operation: "fsync", errno: errno) }
        guard rename(temporary, path) == 0 else { throw ShardFSError.io(path: path, operation: "rename", errno: errno) }
        renamed = true
        try VirtualFileWriter.syncDirectory(of: path)
    }

    /// fsync of the directory holding `path`, so that a rename survives a crash.
    public static func syncDirectory(of path: String) throws(ShardFSError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let fd = open(directory.isEmpty ? "/" : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ShardFSError.io(path: directory, operation: "open", errno: errno) }
        defer { Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw ShardFSError.io(path: directory, operation: "fsync", errno: errno) }
    }
}
