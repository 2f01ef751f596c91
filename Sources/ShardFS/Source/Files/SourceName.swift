/// A source file's name relative to its directory, held compactly: an xser
/// tensor file's (`P.tensors/tensor_<tid>.pt`, docs/formats/xser.md) is its
/// rank or optimizer file's name, one string that file's few hundred tensor
/// files share, and the tensor's number. A 70B-count training tag in xser is
/// 330,000 such files, whose names held one string each took 47 MB (and as
/// much again in their fingerprints).
public struct SourceName: Sendable {
    private let base: String
    /// -1: the name is `base` itself.
    private let tensor: Int32

    public init(_ name: String) {
        base = name
        tensor = -1
    }

    /// The tensor file of tensor `tid` of the xser file `file`.
    public init(xserTensor tid: Int, of file: String) {
        precondition(tid >= 0 && tid <= Int(Int32.max), "a tensor id out of range")
        base = file
        tensor = Int32(tid)
    }

    /// The name, made when asked (messages, manifests).
    public var string: String { tensor < 0 ? base : RankFile.xserTensorPath(base, tid: Int(tensor)) }
}

extension SourceName: Equatable {
    /// Equal when they name the same file, however each is held (a name read
    /// back from a manifest is held whole).
    public static func == (a: SourceName, b: SourceName) -> Bool {
        if a.tensor >= 0 && b.tensor >= 0 || a.tensor < 0 && b.tensor < 0 { return a.tensor == b.tensor && a.base == b.base }
        return a.string == b.string
    }
}
