/// torch.save archives stored whole inside a larger file, at `offset` and
/// `length` bytes of it (as a DCP `.distcp` file holds its items back to
/// back): the archive is read through a window of the file, exactly as if
/// those bytes were a file of their own (its end records must end the
/// window, its records lie inside it), and every offset in the results is
/// the larger file's.
extension TorchSaveReader {
    /// The one tensor of the archive at `offset..<offset + length` of
    /// `read`'s file (`file` names the archive in refusals).
    public static func singleTensor(file: String, at offset: Int, length: Int, read: Read) throws(ShardFSError) -> LocatedTensor {
        let tensor = try singleTensor(file: file, fileSize: length) { (o, count) throws(ShardFSError) in try read(offset + o, count) }
        return tensor.moved(by: offset)
    }

    /// The plain Python value (None, a bool, an int, a float, a string, or a
    /// list, tuple or dict of these) a torch.save archive holds; a tensor or
    /// anything else in it is refused.
    public static func plainValue(file: String, fileSize: Int, read: Read) throws(ShardFSError) -> PickleValue {
        let archive = try TorchSaveArchive(file: file, fileSize: fileSize, read: read)
        guard PickleWriter.isPlain(archive.root) else {
            throw ShardFSError.badSource(file: file, reason: "data.pkl holds \(archive.root.kindName) that is not a plain Python value (None, bool, int, float, str, or a list, tuple or dict of these)")
        }
        return archive.root
    }

    /// `plainValue` of the archive at `offset..<offset + length` of `read`'s file.
    public static func plainValue(file: String, at offset: Int, length: Int, read: Read) throws(ShardFSError) -> PickleValue {
        try plainValue(file: file, fileSize: length) { (o, count) throws(ShardFSError) in try read(offset + o, count) }
    }
}

extension LocatedTensor {
    /// The same tensor, its archive found `base` bytes further into the file.
    func moved(by base: Int) -> LocatedTensor {
        let s = storage
        return LocatedTensor(key: key, dtype: dtype, shape: shape, strides: strides, offset: offset + base,
                             storage: ZipRecord(name: s.name, dataOffset: s.dataOffset + base, size: s.size, crc32: s.crc32,
                                                localHeaderOffset: s.localHeaderOffset + base))
    }
}
