/// The records of a `torch.save` archive, in torch's order (docs/formats/pt.md,
/// "Records, in order"), around a pickle and its storages.
public enum TorchSaveFile {
    /// The archive's top folder: the file's basename up to its last `.`.
    public static func archiveName(forFileName fileName: String) -> String {
        let base = fileName.split(separator: "/").last.map(String.init) ?? fileName
        guard let dot = base.lastIndex(of: ".") else { return base }
        return String(base[..<dot])
    }

    /// A `torch.save` file of `pickle` whose storage i holds `storages[i]`.
    public static func file(fileName: String, pickle: [UInt8], storages: [[Extent]], serializationID: String) -> VirtualFile {
        let a = archiveName(forFileName: fileName)
        var records = [
            ZipLayout.Record(name: "\(a)/data.pkl", bytes: pickle),
            ZipLayout.Record(name: "\(a)/.format_version", bytes: Array("1".utf8)),
            ZipLayout.Record(name: "\(a)/.storage_alignment", bytes: Array("64".utf8)),
            ZipLayout.Record(name: "\(a)/byteorder", bytes: Array("little".utf8)),
        ]
        for (index, storage) in storages.enumerated() {
            records.append(ZipLayout.Record(name: "\(a)/data/\(index)", payload: storage))
        }
        records.append(ZipLayout.Record(name: "\(a)/version", bytes: Array("3\n".utf8)))
        records.append(ZipLayout.Record(name: "\(a)/.data/serialization_id", bytes: Array(serializationID.utf8)))
        return ZipLayout.file(records)
    }

    /// 40 decimal digits derived from `seed` (torch draws them at random;
    /// ShardFS derives them so the same layout always yields the same bytes).
    public static func serializationID(seed: String) -> String {
        func twentyDigits(_ v: UInt64) -> String {
            let digits = String(v)
            return String(repeating: "0", count: 20 - digits.count) + digits
        }
        return twentyDigits(FNV1a.hash(seed.utf8)) + twentyDigits(FNV1a.hash(seed.utf8, basis: 0x6C62_272E_07BB_0142))
    }
}
