/// One tensor of a checked file against the tensor the layout wants under
/// its key: dtype, shape, then every element, bit for bit.
struct TensorCheck {
    /// What the check found; `foldedCRC` is the CRC-32 of the tensor's
    /// storage record when the comparison read exactly that record in order.
    struct Result {
        var problems: [VerifyProblem] = []
        var foldedCRC: UInt32?
    }

    let context: CheckContext
    /// The tp rank of the file (for the KV-head diagnosis).
    let tpRank: Int

    /// `file` names the checked file (relative to TAG); `reader` reads it
    /// (index 0). A read of the checked file that fails is thrown (the file
    /// is then unreadable); one of the source becomes a `sourceError`.
    func check(_ planned: PlannedTensor, against located: LocatedTensor, file: String,
               reader: ExtentReader) throws(ShardFSError) -> Result {
        try check(Expected(key: planned.key, dtype: planned.dtype, shape: planned.shape, storage: planned.storage, planned: planned),
                  against: located, file: file, reader: reader)
    }

    /// What a tensor must be: a rank file's planned tensor, or an optimizer
    /// shard (whose storage ends in padding, and whose KV heads are not
    /// diagnosed: `planned` nil).
    struct Expected {
        let key: String
        let dtype: DType
        let shape: [Int]
        let storage: [Extent]
        let planned: PlannedTensor?

        var byteCount: Int { shape.reduce(dtype.size, *) }
    }

    func check(_ planned: Expected, against located: LocatedTensor, file: String,
               reader: ExtentReader) throws(ShardFSError) -> Result {
        var result = Result()
        let key = planned.key
        guard located.dtype == planned.dtype else {
            result.problems.append(VerifyProblem(.wrongDType, file: file, key: key,
                                                 "\(key) is \(located.dtype.rawValue), the layout wants \(planned.dtype.rawValue)"))
            return result
        }
        guard located.shape == planned.shape else {
            result.problems.append(VerifyProblem(.wrongShape, file: file, key: key,
                                                 "\(key) has shape \(located.shape), the layout wants \(planned.shape)"))
            return result
        }
        guard let found = FoundTensor(located) else {
            result.problems.append(VerifyProblem(.wrongShape, file: file, key: key,
                                                 "\(key) has strides \(located.strides) over shape \(located.shape), which ShardFS cannot read as rows"))
            return result
        }
        let foldsCRC = found.isWholeRecordInOrder && located.storage.crc32 != 0
        var crc: RecordCRC? = foldsCRC ? RecordCRC() : nil
        let difference: (index: Int, expected: ElementValue, found: ElementValue)?
        do {
            difference = try StreamComparison.firstDifference(
                byteCount: planned.byteCount, dtype: planned.dtype, buffers: context.buffers,
                expected: CheckContext.stream(VirtualFile(extents: planned.storage), context.expectedReader),
                found: CheckContext.stream(VirtualFile(extents: found.extents()), reader),
                crc: &crc, progress: context.progress)
        } catch {
            switch error.side {
            case .found: throw error.error
            case .expected:
                result.problems.append(VerifyProblem(.sourceError, file: file, key: key,
                                                     "\(key) could not be checked: reading the source failed: \(error.error)"))
                return result
            }
        }
        result.foldedCRC = crc?.value
        if let difference {
            let value = ValueDifference(index: difference.index, shape: planned.shape, expected: difference.expected, found: difference.found)
            let findings = planned.planned.map { KVHeadDiagnosis.findings($0, found: found, reader: reader, context: context) } ?? []
            var message = "\(key) differs at \(value.description)"
            if let heads = KVHeadDiagnosis.message(findings, layout: context.layout, config: context.config, tpRank: tpRank) {
                message += "; " + heads
            }
            result.problems.append(VerifyProblem(.wrongValues, file: file, key: key, message, difference: value, kvHeads: findings))
        }
        return result
    }
}
