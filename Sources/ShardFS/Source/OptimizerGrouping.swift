/// How a training script split its parameters into the optimizer's param
/// groups, in `named_parameters()` order: what turns a ZeRO-1 optimizer's
/// parameter index back into a parameter name (docs/formats/zero1.md, "Index ->
/// parameter"). The files hold only indices and shapes; the rule is the
/// script's.
public enum OptimizerGrouping: Equatable, Sendable, CustomStringConvertible {
    /// NxD's examples: group 0 the parameters whose names contain none of
    /// `noDecay`, group 1 those that contain one (`no_decay = ["bias", "norm"]`).
    case noDecay([String])
    /// One group of every parameter.
    case single

    /// The examples' rule.
    public static let examples = OptimizerGrouping.noDecay(["bias", "norm"])

    /// `--optimizer-groups`: `all` for one group, else the comma-separated
    /// name parts of the no-decay group (`bias,norm`).
    public init?(flag: String) {
        if flag == "all" {
            self = .single
            return
        }
        let parts = flag.split(separator: ",").map { String($0) }
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else { return nil }
        self = .noDecay(parts)
    }

    public var description: String {
        switch self {
        case .noDecay(let parts): return "two groups, no_decay = [\(parts.map { "'\($0)'" }.joined(separator: ", "))]"
        case .single: return "one group of every parameter"
        }
    }

    /// The flag's value that names this rule.
    public var flag: String {
        switch self {
        case .noDecay(let parts): return parts.joined(separator: ",")
        case .single: return "all"
        }
    }

    /// `keys` (a rank's parameters in `named_parameters()` order) in their
    /// groups, in group order.
    public func groups(_ keys: [String]) -> [[String]] {
        switch self {
        case .single:
            return [keys]
        case .noDecay(let parts):
            // Python's `nd in n`: a substring of the UTF-8 bytes (the same
            // thing for valid strings), without Foundation's locale-aware
            // search, which cost more than the rest of a 1,024-file tag's
            // grouping together.
            let isNoDecay = { (key: String) in parts.contains { OptimizerGrouping.bytes(of: key, contain: $0) } }
            return [keys.filter { !isNoDecay($0) }, keys.filter(isNoDecay)]
        }
    }

    /// Whether `part`'s UTF-8 bytes occur in `name`'s.
    static func bytes(of name: String, contain part: String) -> Bool {
        var name = name, part = part
        return name.withUTF8 { haystack in
            part.withUTF8 { needle in
                guard needle.count <= haystack.count else { return false }
                guard !needle.isEmpty else { return true }
                for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
                    var matched = 1
                    while matched < needle.count, haystack[start + matched] == needle[matched] { matched += 1 }
                    if matched == needle.count { return true }
                }
                return false
            }
        }
    }
}
