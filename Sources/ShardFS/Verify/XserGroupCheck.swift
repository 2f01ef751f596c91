import Foundation

/// An xser rank file's group (docs/formats/xser.md) against the rank file the layout
/// plans: `P`'s references (keys in order), `P.info.pt` (each entry equal to
/// its tensor file's dtype and shape: the ranks that do not read a tensor
/// build zeros from it), every `P.tensors/tensor_<tid>.pt` a reference names
/// (followed by tid, as the trainer loads them), stray tensor files, and the
/// CRC-32s of every file's records.
struct XserGroupCheck {
    let context: CheckContext
    let rankFile: RankFile

    func run() -> FileVerdict {
        let path = rankFile.path
        return context.verdict(path) { () throws(ShardFSError) in
            let archive = try context.openArchive(path)
            let references = try TorchSaveReader.tensorReferences(file: path, fileSize: archive.file.size, read: archive.read)
            var problems = try context.crcProblems(archive.directory, of: archive.file, path: path, done: [], keys: [:])
            let info = readInfo(&problems)
            problems += KeyListComparison.problems(planned: rankFile.tensors.map(\.key), found: references.map(\.key), file: path)
            problems += tensorFiles(references, info: info)
            return FileVerdict(path: path, problems: problems)
        }
    }

    /// `P.info.pt`'s entries, or nil (its problem recorded) when it is missing or unreadable.
    private func readInfo(_ problems: inout [VerifyProblem]) -> [Int: (dtype: DType, shape: [Int])]? {
        let infoPath = RankFile.xserInfoPath(rankFile.path)
        guard CheckContext.exists(context.tag + "/" + infoPath) else {
            problems.append(VerifyProblem(.missingFile, file: infoPath, "missing: the trainer reads it for every xser rank file"))
            return nil
        }
        do throws(ShardFSError) {
            let archive = try context.openArchive(infoPath)
            let info = try TorchSaveReader.tensorInfo(file: infoPath, fileSize: archive.file.size, read: archive.read)
            problems += try context.crcProblems(archive.directory, of: archive.file, path: infoPath, done: [], keys: [:])
            return info
        } catch {
            problems.append(VerifyProblem(.unreadable, file: infoPath, CheckContext.reason(error, file: infoPath)))
            return nil
        }
    }

    /// Every tensor file a reference names, checked; then the stray ones.
    private func tensorFiles(_ references: [(key: String, tid: Int)], info: [Int: (dtype: DType, shape: [Int])]?) -> [VerifyProblem] {
        let path = rankFile.path
        let folder = path + ".tensors"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: context.tag + "/" + folder) else {
            return [VerifyProblem(.missingFile, file: folder, "missing: the folder of the \(references.count) tensor files \(path) names")]
        }
        let present = Set(entries)
        let planned = Dictionary(rankFile.tensors.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        let check = TensorCheck(context: context, tpRank: rankFile.tpRank)
        var problems: [VerifyProblem] = []
        var named: Set<String> = []
        for (key, tid) in references {
            let tensorPath = RankFile.xserTensorPath(path, tid: tid)
            let name = String(tensorPath.dropFirst(folder.count + 1))
            named.insert(name)
            guard present.contains(name) else {
                problems.append(VerifyProblem(.missingFile, file: tensorPath, key: key, "missing: \(path) names tensor \(tid) (\(key)) there"))
                continue
            }
            do throws(ShardFSError) {
                let archive = try context.openArchive(tensorPath)
                let (file, directory) = (archive.file, archive.directory)
                let single = try TorchSaveReader.singleTensor(file: tensorPath, fileSize: file.size, read: archive.read)
                let tensor = LocatedTensor(key: key, dtype: single.dtype, shape: single.shape, strides: single.strides,
                                           offset: single.offset, storage: single.storage)
                if let info {
                    let infoPath = RankFile.xserInfoPath(path)
                    if let described = info[tid] {
                        if described.dtype != tensor.dtype || described.shape != tensor.shape {
                            problems.append(VerifyProblem(
                                .infoMismatch, file: infoPath, key: key,
                                "says \(described.dtype.rawValue) \(described.shape) for tensor \(tid) (\(key)), but \(tensorPath) holds \(tensor.dtype.rawValue) \(tensor.shape)"))
                        }
                    } else {
                        problems.append(VerifyProblem(.infoMismatch, file: infoPath, key: key, "has no entry for tensor \(tid) (\(key))"))
                    }
                }
                var done: Set<String> = []
                if let want = planned[key] {
                    let result = try check.check(want, against: tensor, file: tensorPath,
                                                 reader: ExtentReader(sources: [file], scratchBytes: 4096))
                    problems += result.problems
                    if let crc = result.foldedCRC {
                        done.insert(tensor.storage.name)
                        if crc != tensor.storage.crc32 {
                            problems.append(CheckContext.crcProblem(record: tensor.storage, computed: crc, path: tensorPath, key: key))
                        }
                    }
                }
                problems += try context.crcProblems(directory, of: file, path: tensorPath, done: done, keys: [tensor.storage.name: key])
            } catch {
                problems.append(VerifyProblem(.unreadable, file: tensorPath, key: key, CheckContext.reason(error, file: tensorPath)))
            }
        }
        for name in entries.sorted() where !named.contains(name) {
            problems.append(VerifyProblem(.extraFile, file: folder + "/" + name, "a tensor file no reference of \(path) names"))
        }
        return problems
    }
}
