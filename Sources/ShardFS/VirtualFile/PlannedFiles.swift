/// A plan's files in order, each a `(path, PlannedFile)`, held compactly:
/// the group of an xser rank or optimizer file (`p`, `p.info.pt`, then
/// `p.tensors/tensor_<tid>.pt` by tid) is one entry, and a tensor file's
/// path is spelt only when asked for. A 70B-count training tag in xser is
/// 350,000 files: their paths held at once took 47 MB, the list of pairs
/// 20 MB more. Convert, plan and mount read it as any collection of pairs.
public struct PlannedFiles: RandomAccessCollection, Sendable {
    public typealias Element = (path: String, file: PlannedFile)

    private enum Entry: Sendable {
        case file(String, PlannedFile)
        case xser(path: String, reference: PlannedFile, info: PlannedFile, tensors: RecipeGroup)

        var count: Int {
            switch self {
            case .file: return 1
            case let .xser(_, _, _, tensors): return 2 + tensors.sizes.count
            }
        }

        var path: String {
            switch self {
            case let .file(path, _): return path
            case let .xser(path, _, _, _): return path
            }
        }

        func element(_ offset: Int) -> Element {
            switch self {
            case let .file(path, file):
                return (path, file)
            case let .xser(path, reference, info, tensors):
                switch offset {
                case 0: return (path, reference)
                case 1: return (RankFile.xserInfoPath(path), info)
                default: return (RankFile.xserTensorPath(path, tid: offset - 2), PlannedFile(tensors, member: offset - 2))
                }
            }
        }
    }

    private var entries: [Entry] = []
    /// `ends[i]`: how many files entries 0 through i hold.
    private var ends: [Int] = []
    /// An entry by its path (a file's, or a group's `p`).
    private var entryOfPath: [String: Int] = [:]

    public init() {}

    public init(_ files: some Sequence<Element>) {
        for (path, file) in files { append(path, file) }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { ends.last ?? 0 }

    public subscript(position: Int) -> Element {
        precondition(indices.contains(position), "no file \(position) of \(count)")
        // The first entry ending after `position`.
        var low = 0, high = ends.count - 1
        while low < high {
            let mid = (low + high) / 2
            if ends[mid] > position { high = mid } else { low = mid + 1 }
        }
        return entries[low].element(position - (low == 0 ? 0 : ends[low - 1]))
    }

    public mutating func append(_ path: String, _ file: PlannedFile) {
        add(.file(path, file))
    }

    /// The xser group of `path`: its reference file, its `.info.pt`, and
    /// its tensor files, `tensors`' members by tid.
    mutating func appendXser(path: String, reference: PlannedFile, info: PlannedFile, tensors: RecipeGroup) {
        add(.xser(path: path, reference: reference, info: info, tensors: tensors))
    }

    public mutating func append(contentsOf other: PlannedFiles) {
        for entry in other.entries { add(entry) }
    }

    public static func + (a: PlannedFiles, b: PlannedFiles) -> PlannedFiles {
        var sum = a
        sum.append(contentsOf: b)
        return sum
    }

    private mutating func add(_ entry: Entry) {
        entryOfPath[entry.path] = entries.count
        entries.append(entry)
        ends.append(endIndex + entry.count)
    }

    /// The files without those `isDropped` names (by a single file's path or
    /// a group's `p`; a group goes whole).
    public func removing(_ isDropped: (String) -> Bool) -> PlannedFiles {
        var kept = PlannedFiles()
        for entry in entries where !isDropped(entry.path) { kept.add(entry) }
        return kept
    }

    /// Every file's size, added up, with no path spelt.
    public var totalSize: Int {
        entries.reduce(0) { total, entry in
            switch entry {
            case let .file(_, file): return total + file.size
            case let .xser(_, reference, info, tensors): return total + reference.size + info.size + tensors.sizes.reduce(0, +)
            }
        }
    }

    /// The file at `path`, found by the path's shape (no table of every
    /// path): a file or group by its own path, `p.info.pt` and
    /// `p.tensors/tensor_<tid>.pt` by the group `p`.
    public func file(at path: String) -> PlannedFile? {
        if let index = entryOfPath[path] { return entries[index].element(0).file }
        let info = RankFile.xserInfoPath("")
        if path.hasSuffix(info), let index = entryOfPath[String(path.dropLast(info.utf8.count))],
           case let .xser(_, _, file, _) = entries[index] {
            return file
        }
        guard let slash = path.lastIndex(of: "/") else { return nil }
        let folder = path[..<slash], name = path[path.index(after: slash)...]
        let tensors = ".tensors", prefix = "tensor_", suffix = ".pt"
        guard folder.hasSuffix(tensors), name.hasPrefix(prefix), name.hasSuffix(suffix),
              let index = entryOfPath[String(folder.dropLast(tensors.utf8.count))],
              case let .xser(group, _, _, members) = entries[index] else { return nil }
        let digits = name.dropFirst(prefix.utf8.count).dropLast(suffix.utf8.count)
        // Spelt as the group spells it (no `tensor_07.pt`).
        guard let tid = Int(digits), members.sizes.indices.contains(tid), RankFile.xserTensorPath(group, tid: tid) == path else { return nil }
        return PlannedFile(members, member: tid)
    }

    public func contains(path: String) -> Bool {
        file(at: path) != nil
    }

    /// The folders holding the files (relative, no trailing `/`), their
    /// parents included: a group's `p.tensors` when it has tensor files.
    public var folders: Set<String> {
        var folders = Set<String>()
        func add(parentsOf path: String) {
            var path = path
            while let slash = path.lastIndex(of: "/") {
                path = String(path[..<slash])
                guard folders.insert(path).inserted else { return }
            }
        }
        for entry in entries {
            add(parentsOf: entry.path)
            if case let .xser(path, _, _, tensors) = entry, !tensors.sizes.isEmpty {
                add(parentsOf: RankFile.xserTensorPath(path, tid: 0))
            }
        }
        return folders
    }
}
