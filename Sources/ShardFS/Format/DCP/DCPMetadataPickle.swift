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
            p.fields(count: 5) { p in
                p.field("state_dict_metadata")
                p.dict(entries) { p, e in p.sharedString(e.fqn); p.entry(e.entry) }
                p.field("planner_data")
                p.dict(plannerData) { p, item in
                    p.sharedString(item.fqn)
                    p.tuple(count: item.path.count) { p in for part in item.path { p.sharedString(part) } }
                }
                p.field("storage_data")
                p.dict(locations) { p, location in p.location(location) }
                p.field("storage_meta")
                p.storageMeta(saveID: saveID)
                p.field("version")
                p.optionalString(version)
            }
        }
    }
}

extension PickleWriter {
    /// A dataclass object with an empty `__dict__`: `cls`, `()`, NEWOBJ (memoized).
    mutating func dcpObject(_ c: DCPPickleClass) {
        global(c.module, c.rawValue)
        op(PickleWriter.emptyTuple)
        op(PickleWriter.newobj)
        put()
    }

    /// A dataclass object, then its state and BUILD.
    mutating func dcpObject(_ c: DCPPickleClass, state: (inout PickleWriter) -> Void) {
        dcpObject(c)
        state(&self)
        op(PickleWriter.build)
    }

    /// A `__dict__` of `count` attributes (at most 1000: one batch, as `dict`
    /// writes it), each written by `write` as `field(name)` then its value.
    /// Written in place rather than from a list of (name, closure) pairs: a
    /// 64-shard `.metadata` has hundreds of thousands of these objects.
    mutating func fields(count: Int, _ write: (inout PickleWriter) -> Void) {
        op(PickleWriter.emptyDict)
        put()
        guard count > 0 else { return }
        if count > 1 { op(PickleWriter.mark) }
        write(&self)
        op(count > 1 ? PickleWriter.setitems : PickleWriter.setitem)
    }

    /// An attribute name: interned in Python, so one object.
    mutating func field(_ name: String) {
        sharedString(name)
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
            p.fields(count: 3) { p in
                p.field("properties")
                p.tensorProperties(t.dtype)
                p.field("size")
                p.torchSize(t.size)
                p.field("chunks")
                p.list(t.chunks) { p, chunk in
                    p.dcpObject(.chunkStorageMetadata) { p in
                        p.fields(count: 2) { p in
                            p.field("offsets")
                            p.torchSize(chunk.offsets)
                            p.field("sizes")
                            p.torchSize(chunk.sizes)
                        }
                    }
                }
            }
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
            p.fields(count: l.chunkOffsets == nil ? 2 : 3) { p in
                p.field("fqn")
                p.sharedString(l.fqn)
                p.field("index")
                p.optionalInt(l.chunkIndex)
                if let offsets = l.chunkOffsets {
                    p.field("offset")
                    p.torchSize(offsets)
                }
            }
        }
        dcpObject(.storageInfo) { p in
            p.fields(count: 3) { p in
                p.field("relative_path")
                p.sharedString(l.relativePath)
                p.field("offset")
                p.int(l.offset)
                p.field("length")
                p.int(l.length)
            }
        }
    }

    /// `StorageMeta(checkpoint_id=None, save_id=..., load_id=None, modules=[])`, or None.
    mutating func storageMeta(saveID: String?) {
        guard let saveID else { return op(PickleWriter.none) }
        dcpObject(.storageMeta) { p in
            p.fields(count: 4) { p in
                p.field("checkpoint_id")
                p.op(PickleWriter.none)
                p.field("save_id")
                p.sharedString(saveID)
                p.field("load_id")
                p.op(PickleWriter.none)
                p.field("modules")
                p.list([Int]()) { _, _ in }
            }
        }
    }
}
