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
        let path = rankFile.path
        guard CheckContext.exists(context.tag + "/" + path) else {
            return .missing(path)
        }
        do throws(ShardFSError) {
            return FileVerdict(path: path, problems: try problems(path))
        } catch {
            return FileVerdict(path: path, status: .unreadable,
                               problems: [VerifyProblem(.unreadable, file: path, CheckContext.reason(error, file: path))])
        }
    }

    private func problems(_ path: String) throws(ShardFSError) -> [VerifyProblem] {
        let file = try context.open(path)
        let read = { (offset: Int, count: Int) throws(ShardFSError) -> [UInt8] in try file.readBytes(at: offset, count: count) }
        let directory = try ZipDirectory(file: path, fileSize: file.size, read: read)
        let tensors = try TorchSaveReader.stateDict(file: path, fileSize: file.size, read: read)
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
