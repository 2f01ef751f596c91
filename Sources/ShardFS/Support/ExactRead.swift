import SystemPackage

extension FileDescriptor {
    /// Reads exactly `buffer.count` bytes at `offset` (pread, retried on short
    /// reads); a file that ends first is an error naming `name`, since whoever
    /// asks knows how long the file must be. `path` names the file in I/O errors.
    func readExactly(at offset: Int, into buffer: UnsafeMutableRawBufferPointer,
                     path: String, name: String) throws(ShardFSError) {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try read(fromAbsoluteOffset: Int64(offset + done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw ShardFSError.io(path: path, operation: "read", error: error)
            }
            if n == 0 {
                throw ShardFSError.badSource(
                    file: name, reason: "ends at byte \(offset + done), before byte \(offset + buffer.count) (truncated while in use?)")
            }
            done += n
        }
    }
}
