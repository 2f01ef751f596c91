/// Reads the pickles torch.save writes (protocol 2, CPython's C pickler) and
/// NxD's xser files, from untrusted bytes, without executing anything; with
/// `allowList: .dcpMetadata`, a DCP `.metadata` instead (DCPMetadataReader).
///
/// An allow-list machine: it knows the opcodes and globals those pickles use
/// and refuses everything else by name and byte offset. "Calling" a global
/// means building a value (`_rebuild_tensor_v2(...)` -> `.tensor`), never
/// running code. Memory and time are linear in the input and bounded by
/// `Limits`; each limit is a refusal, never a trap.
public enum PickleReader {
    public struct Limits: Sendable {
        /// The pickle itself.
        public var maximumLength = 256 << 20
        /// Memo entries (torch.save uses about 8 a tensor: 1M is 128k tensors).
        public var maximumMemo = 1 << 20
        /// Values on the stack at once (torch.save: about 2 per dict item in a batch of 1000).
        public var maximumStack = 1 << 20
        /// Open MARKs (torch.save: 3).
        public var maximumMarks = 64
        /// Values put in containers, in all; and nodes in the resulting tree.
        /// torch.save puts about 25 in containers a tensor, so 1M is 40k
        /// tensors (a 70B rank file holds under a thousand), and keeps the
        /// worst pickle within about 100 MB.
        public var maximumItems = 1 << 20
        /// Bytes of one string or GLOBAL name.
        public var maximumStringLength = 1 << 20
        /// Containers nested in the result (torch.save: a dict of tensors is 1;
        /// a state_dict's `_metadata` is about 3 plus the module depth).
        public var maximumDepth = 64

        public init() {}
    }

    /// The value the pickle `bytes` builds. `file` names the pickle in errors.
    public static func parse(_ bytes: [UInt8], file: String, limits: Limits = Limits(),
                             allowList: PickleAllowList = .torchSave) throws(ShardFSError) -> PickleValue {
        let (root, heap) = try run(bytes, file: file, limits: limits, allowList: allowList)
        switch heap.tree(root, maximumDepth: limits.maximumDepth, maximumNodes: limits.maximumItems) {
        case .success(let value): return value
        case .failure(.tooDeep):
            throw .badSource(file: file, reason: "the unpickled value nests containers deeper than \(limits.maximumDepth)")
        case .failure(.tooLarge):
            throw .badSource(file: file, reason: "the unpickled value has more than \(limits.maximumItems) nodes once shared objects are counted where they appear")
        case .failure(.containsItself):
            throw .badSource(file: file, reason: "the unpickled value holds a container inside itself")
        }
    }

    /// Runs the pickle: the slot it leaves, and the heap its containers are
    /// in. For readers with a fixed schema (DCP metadata), which walk the
    /// heap along it instead of building a tree.
    static func run(_ bytes: [UInt8], file: String, limits: Limits,
                    allowList: PickleAllowList) throws(ShardFSError) -> (root: PickleSlot, heap: PickleHeap) {
        guard bytes.count <= limits.maximumLength else {
            throw .badSource(file: file, reason: "a pickle of \(bytes.count) bytes, more than the \(limits.maximumLength) ShardFS reads")
        }
        var machine = PickleMachine(bytes: bytes, file: file, limits: limits, allowList: allowList)
        let root = try machine.run()
        return (root, machine.heap)
    }
}

/// Whose pickles a reader accepts: each producer has its own opcodes and
/// globals, and a pickle of one is refused as the other.
public enum PickleAllowList: Sendable {
    /// torch.save's data.pkl (protocol 2) and NxD's xser files.
    case torchSave
    /// A torch.distributed.checkpoint `.metadata`: `pickle.dump` of its
    /// `Metadata` dataclass (protocol 4 in Python 3.8 to 3.13, 5 from 3.14;
    /// ShardFS writes 2), with DCP's classes only.
    case dcpMetadata

    /// The protocols its pickles open with.
    var protocols: ClosedRange<UInt8> { self == .torchSave ? 2...2 : 2...5 }

    /// Who writes such pickles, for refusals ("not something torch.save writes").
    var writer: String { self == .torchSave ? "torch.save" : "DCP's pickle of Metadata" }
}
