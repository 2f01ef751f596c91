/// What `verify` found: per file of the layout a verdict, files the layout
/// does not name, and hints that explain a pattern of failures.
public struct VerifyReport: Sendable {
    /// One per rank file of the part checked, in the plan's order; then one
    /// per file in TAG/model the layout does not name.
    public let files: [FileVerdict]
    /// Explanations of the whole (another layout, another format), if any.
    public let hints: [String]
    /// Tensor bytes compared.
    public let bytes: Int

    public var isOK: Bool { files.allSatisfy { $0.status == .ok } }

    public func count(_ status: FileVerdict.Status) -> Int { files.filter { $0.status == status }.count }
}

/// The verdict on one rank file (in xser, on its group: `P`, `P.info.pt`
/// and `P.tensors/`), or on one file the layout does not name.
public struct FileVerdict: Sendable, Equatable {
    public enum Status: String, Sendable {
        /// Every key, dtype, shape and element as the layout says.
        case ok
        /// Readable, but something differs: see `problems`.
        case wrong
        /// The layout names it; TAG lacks it.
        case missing
        /// Not a torch.save file ShardFS can read (truncated, damaged).
        case unreadable
        /// In TAG/model, but the layout does not name it.
        case extra
    }

    /// Relative to TAG (`model/dp_rank_00_tp_rank_03_pp_rank_01.pt`).
    public let path: String
    public let status: Status
    public let problems: [VerifyProblem]

    public init(path: String, status: Status, problems: [VerifyProblem] = []) {
        self.path = path
        self.status = status
        self.problems = problems
    }

    /// `problems` decide: none is ok, any is wrong.
    init(path: String, problems: [VerifyProblem]) {
        self.init(path: path, status: problems.isEmpty ? .ok : .wrong, problems: problems)
    }

    /// The verdict on a file the layout names and TAG lacks.
    static func missing(_ path: String) -> FileVerdict {
        FileVerdict(path: path, status: .missing, problems: [VerifyProblem(.missingFile, file: path, "missing")])
    }
}

/// One thing wrong with a file, said so that the message alone is enough
/// (it names the key, the element and both values where there are such).
public struct VerifyProblem: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case missingFile, extraFile, unreadable
        case missingKey, extraKey, keyOrder
        case wrongDType, wrongShape, wrongValues
        case crcMismatch, infoMismatch
        /// The source could not be read where this file needs it.
        case sourceError
    }

    public let kind: Kind
    /// The file at fault, relative to TAG (in xser, the very file: `P.info.pt`, a tensor file).
    public let file: String
    /// The state-dict key concerned, if one is.
    public let key: String?
    /// What is wrong, without the file's name.
    public let message: String
    /// `wrongValues`: the first element that differs.
    public let difference: ValueDifference?
    /// `wrongValues` of a K/V tensor: which KV heads it holds and which the layout wants.
    public let kvHeads: [KVHeadFinding]

    public init(_ kind: Kind, file: String, key: String? = nil, _ message: String,
                difference: ValueDifference? = nil, kvHeads: [KVHeadFinding] = []) {
        self.kind = kind
        self.file = file
        self.key = key
        self.message = message
        self.difference = difference
        self.kvHeads = kvHeads
    }
}

/// The first element of a tensor that differs from what the layout wants.
public struct ValueDifference: Sendable, Equatable {
    /// Row-major index into the tensor (byte offset / dtype size).
    public let index: Int
    /// The same index per dimension.
    public let position: [Int]
    public let expected: ElementValue
    public let found: ElementValue

    public init(index: Int, shape: [Int], expected: ElementValue, found: ElementValue) {
        self.index = index
        self.position = ValueDifference.unravel(index, shape: shape)
        self.expected = expected
        self.found = found
    }

    static func unravel(_ index: Int, shape: [Int]) -> [Int] {
        var position = [Int](repeating: 0, count: shape.count)
        var rest = index
        for dim in shape.indices.reversed() where shape[dim] > 0 {
            position[dim] = rest % shape[dim]
            rest /= shape[dim]
        }
        return position
    }

    /// `element [34, 5] (index 1093): expected 0.0123 (0x3c4a), found -0.5 (0xbf00)`.
    public var description: String {
        "element [\(position.map(String.init).joined(separator: ", "))] (index \(index)): expected \(expected.description), found \(found.description)"
    }
}

/// Of the K or V rows of a rank file's tensor, one head block (head_dim
/// rows): which KV head of the source the layout wants there, and which it
/// holds.
public struct KVHeadFinding: Sendable, Equatable {
    /// "K" or "V".
    public let projection: String
    /// The head block's first row in the tensor.
    public let row: Int
    public let wanted: Int
    /// nil when the rows equal no KV head of the source.
    public let found: Int?

    public init(projection: String, row: Int, wanted: Int, found: Int?) {
        self.projection = projection
        self.row = row
        self.wanted = wanted
        self.found = found
    }
}
