/// The weight files of a Hugging Face checkpoint as transformers 5.24's
/// `model.save_pretrained(dir, max_shard_size=..., safe_serialization=True)`
/// writes them (config.json and generation_config.json aside): one
/// `model.safetensors`, or shards `model-0000K-of-0000N.safetensors` and
/// `model.safetensors.index.json`. transformers splits with huggingface_hub's
/// `split_torch_state_dict_into_shards` and writes each shard with
/// `safetensors.torch.save_file(shard, path, metadata={"format": "pt"})`.
///
/// Version notes (what differs from releases other than the ones tested):
/// - transformers 5.x defaults `max_shard_size` to "50GB"; 4.x to "5GB"
///   (earlier still "10GB"). The default only matters when none is given.
/// - the index's `total_parameters` is recent: older releases wrote
///   `{"metadata": {"total_size": ...}}` alone.
/// - older 4.x releases split with their own `shard_checkpoint`, not
///   huggingface_hub's: an oversized tensor stayed in state-dict order
///   (closing the shard before it) instead of being numbered ahead of the
///   shard being filled, so shard numbering can differ from theirs when a
///   tensor exceeds the limit.
public enum HuggingFaceShards {
    /// The weight files for `tensors` (tied weights already left out), at
    /// paths relative to the checkpoint folder: the shards in file order,
    /// then the index when there is more than one. No tensors, no files:
    /// save_pretrained writes none then either.
    ///
    /// The tensors come in the order save_pretrained splits them in, which
    /// decides which shard each lands in (nothing else): `model.state_dict()`
    /// order for a model built from its config, `dotNaturalOrder(_:)` for one
    /// loaded with `from_pretrained` (see there).
    public static func files(_ tensors: [HFTensor], maxShardSize: Int) -> [(path: String, file: PlannedFile)] {
        let split = Split(tensors.map(\.byteCount), maxShardSize: maxShardSize)
        var result: [(path: String, file: PlannedFile)] = []
        for (shard, indices) in split.shards.enumerated() {
            result.append((split.fileName(shard), PlannedFile(SafetensorsFile.file(indices.map { tensors[$0] }, metadata: [("format", "pt")]))))
        }
        if split.isSharded {
            let index = indexJSON(tensors, split: split)
            result.append((indexFileName, PlannedFile(VirtualFile(extents: [.literal(index)]))))
        }
        return result
    }

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    /// Which tensors go in which file: the unsharded/sharded decision that
    /// convert and mount share through `files`.
    public struct Split: Equatable, Sendable {
        /// Per file, in file order, the indices of its tensors in state-dict order.
        public let shards: [[Int]]
        /// Bytes of all tensors: the index's `total_size`.
        public let totalSize: Int

        /// huggingface_hub's greedy split (`split_state_dict_into_shards_factory`),
        /// over the tensors' sizes in state-dict order, no look-ahead:
        /// - a tensor larger than `maxShardSize` gets a shard of its own, placed
        ///   in the list at once, so before the shard still being filled: its
        ///   file number can be lower than that of tensors before it;
        /// - otherwise a tensor that would take the shard being filled past
        ///   `maxShardSize` closes it and starts the next (a shard exactly at
        ///   the limit is kept);
        /// - the last shard being filled is closed at the end.
        /// Sizes are storage bytes (`untyped_storage().nbytes()`), here each
        /// tensor's own bytes, as a loaded model's parameters own their storage.
        public init(_ sizes: [Int], maxShardSize: Int) {
            var shards: [[Int]] = []
            var current: [Int] = []
            var currentSize = 0
            for (index, size) in sizes.enumerated() {
                if size > maxShardSize {
                    shards.append([index])
                    continue
                }
                if currentSize + size > maxShardSize {
                    shards.append(current)
                    current = []
                    currentSize = 0
                }
                current.append(index)
                currentSize += size
            }
            if !current.isEmpty { shards.append(current) }
            self.shards = shards
            self.totalSize = sizes.reduce(0, +)
        }

        /// More than one file: then shards are numbered and indexed.
        public var isSharded: Bool { shards.count > 1 }

        /// `model.safetensors` alone; else huggingface_hub's pattern
        /// `model{suffix}.safetensors` with suffix `-{k:05d}-of-{n:05d}`.
        public func fileName(_ shard: Int) -> String {
            guard isSharded else { return HuggingFaceShards.singleFileName }
            return "model-\(fiveDigits(shard + 1))-of-\(fiveDigits(shards.count)).safetensors"
        }

        /// Python's `{:05d}`: at least 5 digits, zero-padded.
        private func fiveDigits(_ n: Int) -> String {
            let digits = String(n)
            return String(repeating: "0", count: max(0, 5 - digits.count)) + digits
        }
    }

    /// The index as transformers writes it: `json.dumps(index, indent=2,
    /// sort_keys=True) + "\n"` of `{"metadata": {"total_parameters":
    /// model.num_parameters(), "total_size": split total}, "weight_map":
    /// {name: file}}`. With sort_keys every object's keys come in code-point
    /// order (= UTF-8 byte order), so the weight map is sorted by name, not
    /// in file order; strings are ASCII-escaped (`ensure_ascii`).
    /// `num_parameters()` counts the model's parameters, each shared one once;
    /// for models whose state dict holds parameters only (Llama: no persistent
    /// buffers) with tied copies left out, that is the tensors' elements.
    /// Only written when sharded, so the weight map is never empty.
    static func indexJSON(_ tensors: [HFTensor], split: Split) -> [UInt8] {
        let totalParameters = tensors.reduce(0) { $0 + $1.elementCount }
        var entries: [(name: String, file: String)] = []
        for (shard, indices) in split.shards.enumerated() {
            for index in indices { entries.append((tensors[index].name, split.fileName(shard))) }
        }
        entries.sort { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        var out = Array("{\n  \"metadata\": {\n".utf8)
        out += Array("    \"total_parameters\": \(totalParameters),\n".utf8)
        out += Array("    \"total_size\": \(split.totalSize)\n".utf8)
        out += Array("  },\n  \"weight_map\": {\n".utf8)
        for (i, entry) in entries.enumerated() {
            if i > 0 { out += Array(",\n".utf8) }
            out += Array("    ".utf8) + JSONText.python(entry.name) + Array(": ".utf8) + JSONText.python(entry.file)
        }
        out += Array("\n  }\n}\n".utf8)
        return out
    }
}
