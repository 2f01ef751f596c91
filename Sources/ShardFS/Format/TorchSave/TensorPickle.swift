/// The `data.pkl` records `torch.save` writes for tensors (docs/formats/pt.md,
/// "data.pkl"): `torch._utils._rebuild_tensor_v2` applied to a persistent
/// storage id, offset 0, size, contiguous stride, `requires_grad=False` and an
/// empty `OrderedDict` of backward hooks.
public struct TensorDescription: Hashable, Sendable {
    public let dtype: DType
    public let shape: [Int]

    public init(dtype: DType, shape: [Int]) {
        self.dtype = dtype
        self.shape = shape
    }

    public var elementCount: Int { shape.reduce(1, *) }

    /// Row-major contiguous strides, as `tensor.stride()` reports them.
    public var strides: [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var step = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = step
            step *= shape[i]
        }
        return strides
    }
}

extension PickleWriter {
    /// Pickles one tensor whose bytes are storage `storageKey` of the archive.
    public mutating func tensor(_ t: TensorDescription, storageKey: String) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(PickleWriter.mark)
        // The persistent id: ('storage', <storage class>, key, location, numel).
        tuple(count: 5) { p in
            p.sharedString("storage")
            p.global("torch", t.dtype.torchStorageClass)
            p.string(storageKey)
            p.sharedString("cpu")
            p.int(t.elementCount)
        }
        op(PickleWriter.binpersid)
        int(0)  // storage offset
        intTuple(t.shape)
        intTuple(t.strides)
        op(PickleWriter.newfalse)  // requires_grad
        global("collections", "OrderedDict")
        op(PickleWriter.emptyTuple)
        op(PickleWriter.reduce)
        put()
        op(PickleWriter.tuple)
        put()
        op(PickleWriter.reduce)
        put()
    }

    /// `data.pkl` of `torch.save(dict)` mapping each key to a tensor; the
    /// tensors' storages are numbered 0, 1, ... in order.
    public static func stateDict(_ entries: [(key: String, tensor: TensorDescription)]) -> [UInt8] {
        var p = PickleWriter()
        let numbered = entries.enumerated().map { (index: $0.offset, key: $0.element.key, tensor: $0.element.tensor) }
        p.dict(numbered) { p, item in
            p.string(item.key)
            p.tensor(item.tensor, storageKey: String(item.index))
        }
        return p.finish()
    }
}
