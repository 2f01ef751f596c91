/// A training tag's `scheduler.pt` as far as a LambdaLR's `state_dict()`
/// goes: what TorchTitan's `lr_scheduler` entries take from it
/// (docs/formats/dcp.md, "ShardFS's choices"). NxD's examples' schedulers
/// are LambdaLRs (a warm-up and a decay as a function of the step).
struct SchedulerState: Equatable {
    let baseLR: Double
    let lastEpoch: Int
    let stepCount: Int
    let lastLR: Double

    init(baseLR: Double, lastEpoch: Int, stepCount: Int, lastLR: Double) {
        self.baseLR = baseLR
        self.lastEpoch = lastEpoch
        self.stepCount = stepCount
        self.lastLR = lastLR
    }

    /// The state in `bytes` (a torch.save'd dict), or nil when it is not a
    /// LambdaLR's (then the step says the same, less exactly).
    init?(bytes: [UInt8], file: String) {
        func read(_ offset: Int, _ count: Int) throws(ShardFSError) -> [UInt8] {
            guard offset >= 0, count >= 0, offset <= bytes.count - count else {
                throw ShardFSError.badSource(file: file, reason: "truncated")
            }
            return Array(bytes[offset..<offset + count])
        }
        guard let archive = try? TorchSaveArchive(file: file, fileSize: bytes.count, read: read),
              case let .dict(items, _) = archive.root else { return nil }
        func value(_ key: String) -> PickleValue? { items.first { $0.key == .string(key) }?.value }
        func first(_ key: String) -> Double? {
            guard case let .list(values)? = value(key), let head = values.first else { return nil }
            switch head {
            case .float(let f): return f
            case .int(let i): return Double(i)
            default: return nil
            }
        }
        guard let baseLR = first("base_lrs"), let lastLR = first("_last_lr"),
              case let .int(lastEpoch)? = value("last_epoch"), case let .int(stepCount)? = value("_step_count") else { return nil }
        self.baseLR = baseLR
        self.lastEpoch = lastEpoch
        self.stepCount = stepCount
        self.lastLR = lastLR
    }
}
