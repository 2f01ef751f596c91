/// `--part I/N`: the I-th (0-based) of N even, contiguous shares of a list,
/// so that N nodes (a Slurm array) each write a disjoint part and together
/// all of it. Contiguous in the converter's tp-major order, each share holds
/// whole tensor ranks across all pipeline stages, which balances bytes too.
public struct Part: Equatable, Sendable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public static let whole = Part(index: 0, count: 1)

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// Parses "I/N" with 0 <= I < N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else { return nil }
        self.init(index: i, count: n)
    }

    public var description: String { "\(index)/\(count)" }

    /// Items `index * total / count ..< (index + 1) * total / count`, in
    /// full-width arithmetic: `--part` takes any I/N that fits an Int, and
    /// `(I + 1) * total` may not.
    public func range(of total: Int) -> Range<Int> {
        Part.share(index, of: total, in: count)..<Part.share(index + 1, of: total, in: count)
    }

    /// `i * total / count` without overflow (0 <= i <= count, total >= 0).
    private static func share(_ i: Int, of total: Int, in count: Int) -> Int {
        let product = i.multipliedFullWidth(by: total)
        return count.dividingFullWidth(product).quotient
    }

    public func select<T>(_ items: [T]) -> [T] { Array(items[range(of: items.count)]) }
}
