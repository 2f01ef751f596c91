#if canImport(Glibc)
import Glibc
#endif

/// A plain rank file (`torch.save` of a dict of tensors) against the rank
/// file the layout plans: its keys in order, then each tensor, then the
/// CRC-32 of every record that has one. Reads each tensor byte once (a
/// record holding exactly one tensor, in order, has its CRC folded into the
/// comparison; any other record with a CRC is read once more for it).
struct PlainRankFileCheck {
    let context: CheckContext
    let rankFile: RankFile

    func run() -> FileVerdict {
        context.verdict(rankFile.path) { () throws(ShardFSError) in
            FileVerdict(path: rankFile.path, problems: try problems(context.openArchive(rankFile.path)))
        }
    }

    private func problems(_ archive: CheckContext.Archive) throws(ShardFSError) -> [VerifyProblem] {
        let (path, file, directory) = (archive.path, archive.file, archive.directory)
        let tensors = try TorchSaveReader.stateDict(file: path, fileSize: file.size, read: archive.read)
        var problems = KeyListComparison.problems(planned: rankFile.tensors.map(\.key), found: tensors.map(\.key), file: path)
        let planned = Dictionary(rankFile.tensors.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        let reader = ExtentReader(sources: [file], scratchBytes: 4096)
        let check = TensorCheck(context: context, tpRank: rankFile.tpRank)
        var done: Set<String> = []
        var keyOfRecord: [String: String] = [:]
        for tensor in tensors {
            if keyOfRecord[tensor.storage.name] == nil { keyOfRecord[tensor.storage.name] = tensor.key }
            guard let want = planned[tensor.key] else { continue }
            let result = try check.check(want, against: tensor, file: path, reader: reader)
            problems += result.problems
            if let crc = result.foldedCRC, done.insert(tensor.storage.name).inserted, crc != tensor.storage.crc32 {
                problems.append(CheckContext.crcProblem(record: tensor.storage, computed: crc, path: path, key: tensor.key))
            }
        }
        problems += try context.crcProblems(directory, of: file, path: path, done: done, keys: keyOfRecord)
        return problems
    }
}

extension CheckContext {
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// An error's text without the file's name when it names `file` (the report names it already).
    static func reason(_ error: ShardFSError, file: String) -> String {
        if case let .badSource(named, reason) = error, named == file { return reason }
        return error.description
    }
}
