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
    /// Bytes per write system call (see `write`).
    static let writeBytes = 256 << 10

    public let reader: ExtentReader
    private let buffer: UnsafeMutableRawBufferPointer

    public init(reader: ExtentReader) {
        self.reader = reader
        buffer = .allocate(byteCount: VirtualFileWriter.chunkSize, alignment: 4096)
    }

    /// Frees the chunk buffer; the writer is unusable afterwards.
    public func close() { buffer.deallocate() }

    /// Lends the chunk buffer (between writes), e.g. to read a file back.
    public func withChunkBuffer<T>(_ body: (UnsafeMutableRawBufferPointer) throws(ShardFSError) -> T) throws(ShardFSError) -> T {
        try body(buffer)
    }

    /// The temporary name a file is written under before its rename.
    public static func temporaryPath(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(directory).\(name).shardfs-tmp-\(getpid())"
    }

    /// Writes `file` to `path` and returns the whole file's CRC-32 (0 when
    /// `fileCRC` is false: it costs a pass over the bytes when the file has no
    /// CRC fields of its own, as a safetensors file has not).
    /// `progress` is told of every chunk written; `pace` is called before each
    /// chunk (it may sleep, to yield to readers); `isCancelled` is polled
    /// between chunks.
    @discardableResult
    public func write(_ file: VirtualFile, to path: String, fileCRC computeFileCRC: Bool = true,
                      progress: (Int) -> Void = { _ in },
                      pace: () -> Void = {},
                      isCancelled: () -> Bool = { false }) throws(ShardFSError) -> UInt32 {
        let temporary = VirtualFileWriter.temporaryPath(for: path)
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(temporary), .readWrite, options: [.create, .truncate, .closeOnExec],
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
        // Without CRC fields nothing is read back: the file's CRC is folded in
        // as it is written (a second pass over 2.5 GB took half of a
        // `--format hf` conversion; the carry-less-multiply CRC-32 sums a
        // chunk in a fraction of its write).
        var runningCRC = computeFileCRC && file.crcSlots.isEmpty ? CRC32() : nil
        var firstOpenSlot = 0
        var offset = 0
        while offset < file.size {
            pace()
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
            runningCRC?.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            // In pieces of `writeBytes`: the kernel sizes page-cache folios
            // by the write, and large fresh folios are slow to fill here.
            // Measured on ext4 (kernel 6.18, 2 vCPU VM), 2.4 GB written with
            // fsync just after 3 GB were deleted: 8 MiB writes 7.9-9.5 s
            // (6.8-8.3 s system time), 1 MiB 2.1-4.4 s, 256 KiB 1.7-1.8 s.
            var written = 0
            while written < count {
                let piece = min(VirtualFileWriter.writeBytes, count - written)
                do {
                    _ = try fd.writeAll(toAbsoluteOffset: Int64(offset + written),
                                        UnsafeRawBufferPointer(rebasing: buffer[written..<written + piece]))
                } catch {
                    throw ShardFSError.io(path: temporary, operation: "write", error: error)
                }
                written += piece
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
        var fileCRC: UInt32 = 0
        if let runningCRC {
            fileCRC = runningCRC.value
        } else if computeFileCRC {
            fileCRC = try wholeFileCRC(file, recordCRCs: crcs.map(\.value), written: fd, path: temporary)
        }
        guard fsync(fd.rawValue) == 0 else { throw ShardFSError.io(path: temporary, operation: "fsync", errno: errno) }
        guard rename(temporary, path) == 0 else { throw ShardFSError.io(path: path, operation: "rename", errno: errno) }
        renamed = true
        try Directories.syncParent(of: path)
        return fileCRC
    }

    /// The CRC-32 of the whole written file, from the records' CRCs and the
    /// zip metadata between them (headers, descriptors, central directory:
    /// small, and read back so the patched CRC fields are included), without
    /// a second pass over the tensor bytes.
    private func wholeFileCRC(_ file: VirtualFile, recordCRCs: [UInt32], written fd: FileDescriptor,
                              path: String) throws(ShardFSError) -> UInt32 {
        var crc: UInt32 = 0
        var position = 0
        func addGap(upTo end: Int) throws(ShardFSError) {
            while position < end {
                let count = min(buffer.count, end - position)
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try fd.readExactly(at: position, into: chunk, path: path, name: path)
                var part = CRC32()
                part.update(UnsafeRawBufferPointer(chunk))
                crc = CRC32.combine(crc, part.value, lengthOfB: count)
                position += count
            }
        }
        for (slot, recordCRC) in zip(file.crcSlots, recordCRCs) {
            try addGap(upTo: slot.data.lowerBound)
            crc = CRC32.combine(crc, recordCRC, lengthOfB: slot.data.count)
            position = slot.data.upperBound
        }
        try addGap(upTo: file.size)
        return crc
    }
}
