/// The `.metadata` file: `pickle.dump` of torch's `Metadata` dataclass, in
/// protocol 2, byte for byte what CPython's pickler writes for the same
/// objects when every equal string is one object (as torch's own metadata
/// nearly is: a name is the same string in all three dicts). torch writes
/// protocol 4 (FRAME, STACK_GLOBAL, MEMOIZE), which only frames and spells
/// the same opcodes differently: `pickle.load` rebuilds the same objects.
///
/// Each dataclass pickles as `copyreg.__reduce_ex__` makes it: its class,
/// `()`, NEWOBJ, then its `__dict__` and BUILD (no BUILD for an empty one:
/// BytesStorageMetadata). TensorProperties' state is its `__getstate__`
/// tuple; `_StorageInfo`'s drops None fields; MetadataIndex's `__init__`
/// leaves `offset` out of its `__dict__` when None. Linear in the entries:
/// every repeated object (class, string, layout) is a memo lookup.
extension DCPMetadata {
    public func pickled() -> [UInt8] {
        var p = PickleWriter()
        write(&p)
        return p.finish()
    }

    /// The pickle in pieces of about `pieceSize` bytes: a 70B training
    /// state's is 24 MB, which one growing array held twice at its last
    /// doubling.
    public func pickled(pieceSize: Int) -> [[UInt8]] {
        var p = PickleWriter(pieceSize: pieceSize)
        write(&p)
        return p.finishInPieces()
    }

    private func write(_ p: inout PickleWriter) {
        p.dcpObject(.metadata) { p in
            p.fields([
                ("state_dict_metadata", { p in p.dict(entries) { p, e in p.sharedString(e.fqn); p.entry(e.entry) } }),
                ("planner_data", { p in
                    p.dict(plannerData) { p, item in
                        p.sharedString(item.fqn)
                        p.tuple(count: item.path.count) { p in for part in item.path { p.sharedString(part) } }
                    }
                }),
                ("storage_data", { p in p.dict(locations) { p, location in p.location(location) } }),
                ("storage_meta", { p in p.storageMeta(saveID: saveID) }),
                ("version", { p in p.optionalString(version) }),
            ])
        }
    }
}

extension PickleWriter {
    /// A dataclass object: `cls`, `()`, NEWOBJ (memoized); then its state and BUILD.
    mutating func dcpObject(_ c: DCPPickleClass, state: ((inout PickleWriter) -> Void)? = nil) {
        global(c.module, c.rawValue)
        op(PickleWriter.emptyTuple)
        op(PickleWriter.newobj)
        put()
        if let state {
            state(&self)
            op(PickleWriter.build)
        }
    }

    /// A `__dict__`: attribute names (interned in Python, so shared) to values.
    mutating func fields(_ items: [(name: String, write: (inout PickleWriter) -> Void)]) {
        dict(items) { p, item in
            p.sharedString(item.name)
            item.write(&p)
        }
    }

    mutating func optionalString(_ s: String?) {
        if let s { sharedString(s) } else { op(PickleWriter.none) }
    }

    mutating func optionalInt(_ v: Int?) {
        if let v { int(v) } else { op(PickleWriter.none) }
    }

    /// A state_dict_metadata value (torch.Size as XserPickle writes it).
    mutating func entry(_ entry: DCPMetadata.Entry) {
        guard case .tensor(let t) = entry else { return dcpObject(.bytesStorageMetadata) }
        dcpObject(.tensorStorageMetadata) { p in
            p.fields([
                ("properties", { p in p.tensorProperties(t.dtype) }),
                ("size", { p in p.torchSize(t.size) }),
                ("chunks", { p in
                    p.list(t.chunks) { p, chunk in
                        p.dcpObject(.chunkStorageMetadata) { p in
                            p.fields([("offsets", { p in p.torchSize(chunk.offsets) }), ("sizes", { p in p.torchSize(chunk.sizes) })])
                        }
                    }
                }),
            ])
        }
    }

    /// `TensorProperties.__getstate__`: (dtype, layout, requires_grad,
    /// memory-format encoding, pin_memory). The layout and the enum member
    /// are single objects in Python: pickled once, then from the memo.
    mutating func tensorProperties(_ dtype: DType) {
        dcpObject(.tensorProperties) { p in
            p.tuple(count: 5) { p in
                p.global("torch", dtype.torchName)
                p.shared("dcp torch.strided") { p in
                    p.global(DCPPickleClass.getLayout.module, DCPPickleClass.getLayout.rawValue)
                    p.tuple(count: 1) { p in p.string("torch.strided") }  // a new string each call in torch
                    p.op(PickleWriter.reduce)
                }
                p.op(PickleWriter.newfalse)
                p.shared("dcp _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT") { p in
                    p.global(DCPPickleClass.memoryFormatEncoding.module, DCPPickleClass.memoryFormatEncoding.rawValue)
                    p.tuple(count: 1) { p in p.int(0) }
                    p.op(PickleWriter.reduce)
                }
                p.op(PickleWriter.newfalse)
            }
        }
    }

    /// A storage_data item: `MetadataIndex` (its `__init__` sets fqn, index,
    /// then offset only when given) -> `_StorageInfo` (None fields dropped).
    mutating func location(_ l: DCPMetadata.Location) {
        dcpObject(.metadataIndex) { p in
            var items: [(name: String, write: (inout PickleWriter) -> Void)] = [
                ("fqn", { p in p.sharedString(l.fqn) }),
                ("index", { p in p.optionalInt(l.chunkIndex) }),
            ]
            if let offsets = l.chunkOffsets { items.append(("offset", { p in p.torchSize(offsets) })) }
            p.fields(items)
        }
        dcpObject(.storageInfo) { p in
            p.fields([
                ("relative_path", { p in p.sharedString(l.relativePath) }),
                ("offset", { p in p.int(l.offset) }),
                ("length", { p in p.int(l.length) }),
            ])
        }
    }

    /// `StorageMeta(checkpoint_id=None, save_id=..., load_id=None, modules=[])`, or None.
    mutating func storageMeta(saveID: String?) {
        guard let saveID else { return op(PickleWriter.none) }
        dcpObject(.storageMeta) { p in
            p.fields([
                ("checkpoint_id", { p in p.op(PickleWriter.none) }),
                ("save_id", { p in p.sharedString(saveID) }),
                ("load_id", { p in p.op(PickleWriter.none) }),
                ("modules", { p in p.list([Int]()) { _, _ in } }),
            ])
        }
    }
}
