/// The `data.pkl`s of a tag, each distinct one unpickled once.
///
/// A training tag repeats the same pickle hundreds of times: every ZeRO-1
/// optimizer file of a pipeline stage (all its DP and TP ranks) and every
/// xser tensor file of one dtype and shape pickle the same bytes, since
/// their state dicts differ only in data, which lives in other records.
/// Unpickling is a pure function of the bytes, so the value of the first is
/// the value of the others: at 70B counts (1,024 optimizer files) this
/// takes the pickle machine out of most of a tag's opening.
///
/// It holds values only while a tag is being opened (between `begin()` and
/// `end()`); elsewhere (a reader of one file, the fuzzers) every pickle is
/// parsed afresh and nothing outlives the call. Only what parsed is kept (a
/// refusal names the file and is raised again for each), small pickles only,
/// and few of them: the table is emptied when full, and when the last open
/// ends.
enum ParsedPickles {
    /// Larger pickles (a rank file of a wide model) are parsed each time:
    /// keeping them would cost more memory than their repeats cost time.
    static let largestKept = 1 << 20
    /// Pickle bytes kept in all (the values take about ten times that).
    static let budget = 2 << 20

    private struct Table {
        var values: [Pickle: PickleValue] = [:]
        var bytes = 0
        /// Opens under way (a `verify` opens two tags).
        var opening = 0
    }

    /// A pickle's bytes as a key, hashed as one buffer (an array of bytes
    /// hashes byte by byte: slower than the pickle machine on small pickles).
    private struct Pickle: Hashable {
        let bytes: [UInt8]
        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    private static let table = Locked(Table())

    /// What `bytes` unpickles to (a torch.save `data.pkl`); `file` names it in errors.
    static func parse(_ bytes: [UInt8], file: String) throws(ShardFSError) -> PickleValue {
        guard bytes.count <= largestKept else { return try PickleReader.parse(bytes, file: file) }
        let key = Pickle(bytes: bytes)
        let (known, keeping) = table.withLock { ($0.values[key], $0.opening > 0) }
        if let known { return known }
        let value = try PickleReader.parse(bytes, file: file)
        guard keeping else { return value }
        table.withLock { table in
            guard table.opening > 0, table.values[key] == nil else { return }
            if table.bytes + bytes.count > budget {
                table.values = [:]
                table.bytes = 0
            }
            table.values[key] = value
            table.bytes += bytes.count
        }
        return value
    }

    /// A tag's opening starts: its pickles are kept until the matching `end()`.
    static func begin() {
        table.withLock { $0.opening += 1 }
    }

    /// A tag is open: once no other opening is under way, every kept value goes.
    static func end() {
        table.withLock { table in
            table.opening -= 1
            if table.opening == 0 { table = Table() }
        }
    }
}
