/// The keys of a file against the keys the layout wants there: which are
/// missing, which are extra, and where the order of the rest first departs.
enum KeyListComparison {
    static func problems(planned: [String], found: [String], file: String) -> [VerifyProblem] {
        let plannedSet = Set(planned), foundSet = Set(found)
        var problems: [VerifyProblem] = []
        for key in planned where !foundSet.contains(key) {
            problems.append(VerifyProblem(.missingKey, file: file, key: key, "key \(key) is missing"))
        }
        for key in found where !plannedSet.contains(key) {
            problems.append(VerifyProblem(.extraKey, file: file, key: key, "key \(key) is not one the layout names"))
        }
        let plannedOrder = planned.filter(foundSet.contains), foundOrder = found.filter(plannedSet.contains)
        if let at = plannedOrder.indices.first(where: { plannedOrder[$0] != foundOrder[$0] }) {
            let key = foundOrder[at], position = found.firstIndex(of: key) ?? at
            problems.append(VerifyProblem(
                .keyOrder, file: file, key: key,
                "keys out of order: key #\(position) is \(key), where the layout has \(plannedOrder[at])"))
        }
        return problems
    }
}
