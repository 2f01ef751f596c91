/// The `data.pkl` records of the three kinds of xser file (docs/formats/xser.md), as
/// `torch.save` writes them. Pinned against real torch.save output by the
/// xser fixtures (Tests/ShardFSTests/Fixtures).
extension PickleWriter {
    /// The module and class NxD's trainer pickles in place of each tensor.
    static let tensorReferenceClass = (module: "torch_xla.utils.serialization", name: "TensorReference")

    /// `p`: a dict mapping each key, in order, to `TensorReference(tid)`
    /// with tid 0, 1, ... The file has no storages.
    public static func tensorReferences(keys: [String]) -> [UInt8] {
        var p = PickleWriter()
        p.dict(Array(keys.enumerated())) { p, item in
            p.string(item.element)
            p.tensorReference(tid: item.offset)
        }
        return p.finish()
    }

    /// A plain object pickled by protocol 2's `object.__reduce_ex__`: the
    /// class (one object, memoized), `EMPTY_TUPLE`, `NEWOBJ`, then its
    /// `__dict__` and `BUILD`. The attribute name `tid` is one interned
    /// string, so it comes from the memo after first use.
    mutating func tensorReference(tid: Int) {
        global(Self.tensorReferenceClass.module, Self.tensorReferenceClass.name)
        op(PickleWriter.emptyTuple)
        op(PickleWriter.newobj)
        put()
        dict([tid]) { p, tid in
            p.sharedString("tid")
            p.int(tid)
        }
        op(PickleWriter.build)
    }

    /// The fields of one `.info.pt` entry, in the order the trainer writes them.
    enum InfoField: String, CaseIterable {
        case dtype, shape
        case expertModelParallel = "expert_model_parallel"
    }

    /// `p.info.pt`: a dict tid -> {"dtype": torch.<dtype>, "shape":
    /// torch.Size(shape), "expert_model_parallel": False}. The field names
    /// are string constants and each dtype one object: all memoized once.
    public static func tensorInfo(_ tensors: [TensorDescription]) -> [UInt8] {
        var p = PickleWriter()
        p.dict(Array(tensors.enumerated())) { p, item in
            p.int(item.offset)
            p.dict(InfoField.allCases) { p, field in
                p.sharedString(field.rawValue)
                switch field {
                case .dtype:
                    p.global("torch", item.element.dtype.torchName)
                case .shape:
                    p.torchSize(item.element.shape)
                case .expertModelParallel:
                    p.op(PickleWriter.newfalse)
                }
            }
        }
        return p.finish()
    }

    /// `torch.Size(shape)`, which reduces to `(torch.Size, (tuple(shape),))`:
    /// the class, a new 1-tuple holding a new shape tuple, `REDUCE`.
    mutating func torchSize(_ shape: [Int]) {
        global("torch", "Size")
        tuple(count: 1) { p in p.intTuple(shape) }
        op(PickleWriter.reduce)
        put()
    }

    /// `p.tensors/tensor_<tid>.pt`: the tensor itself (no dict), storage "0".
    public static func singleTensor(_ tensor: TensorDescription) -> [UInt8] {
        var p = PickleWriter()
        p.tensor(tensor, storageKey: "0")
        return p.finish()
    }
}
