/// A file of a plan: its size, and its extents, made at planning or only a
/// recipe made where the file is read.
///
/// A 70B training tag has 1,024 optimizer files of a few hundred tensors,
/// and as xser 300,000 small files, whose zip framing held at once took a
/// gigabyte: those are recipes. Whoever serves a recipe makes it once per
/// read or write and, where reads follow (a mount's 1 MiB requests), keeps
/// it in a `MadeFiles` of its own, bounded there. A plan holds one of these
/// per file, so it is kept small: a made file's extents, or one reference.
public struct PlannedFile: Sendable {
    private enum Content: Sendable {
        case made(VirtualFile)
        case recipe(FileRecipe)
        /// File `member` of a family made alike (an xser file's tensor
        /// files): no allocation per file.
        case member(RecipeGroup, Int)
    }

    private let content: Content

    /// A file made at planning.
    public init(_ file: VirtualFile) {
        content = .made(file)
    }

    /// A file made by `make` whenever it is read; `make` must give a file
    /// of `size` bytes, the same every time. `sources`, when given, are the
    /// source files its extents read (what a mount watches for it), so that
    /// nothing needs making to know them. `preferredReadSize`: the read size
    /// a reader should buffer by (`st_blksize`), where the maker knows better
    /// than the size alone tells (a DCP file is many archives read one by
    /// one, a seek and a few small reads each).
    public init(size: Int, sources: [Int]? = nil, preferredReadSize: Int? = nil, make: @escaping @Sendable () -> VirtualFile) {
        content = .recipe(FileRecipe(size: size, sources: sources, preferredReadSize: preferredReadSize, make: make))
    }

    /// File `member` of `group`.
    public init(_ group: RecipeGroup, member: Int) {
        precondition(group.sizes.indices.contains(member), "no member \(member) in a group of \(group.sizes.count)")
        content = .member(group, member)
    }

    /// A recipe whose size is taken from one making.
    public static func recipe(_ make: @escaping @Sendable () -> VirtualFile) -> PlannedFile {
        PlannedFile(size: make().size, make: make)
    }

    public var size: Int {
        switch content {
        case let .made(file): return file.size
        case let .recipe(recipe): return recipe.size
        case let .member(group, member): return group.sizes[member]
        }
    }

    /// Whether the file is made only when read (`MadeFiles` keeps such files).
    public var isRecipe: Bool {
        if case .made = content { return false }
        return true
    }

    public var preferredReadSize: Int? {
        if case let .recipe(recipe) = content { return recipe.preferredReadSize }
        return nil
    }

    /// The file's extents: as planned, or made now. A reader that reads the
    /// file more than once keeps what this gives (`MadeFiles`).
    public func make() -> VirtualFile {
        switch content {
        case let .made(file):
            return file
        case let .recipe(recipe):
            let file = recipe.make()
            precondition(file.size == recipe.size, "a recipe made \(file.size) bytes where it promised \(recipe.size)")
            return file
        case let .member(group, member):
            let file = group.make(member)
            precondition(file.size == group.sizes[member], "a recipe made \(file.size) bytes where it promised \(group.sizes[member])")
            return file
        }
    }

    /// The source files this file's extents read, in order.
    public var sourceFileIndexes: [Int] {
        if case let .recipe(recipe) = content, let sources = recipe.sources { return sources }
        return make().sourceFileIndexes
    }
}

/// How to make a recipe file, with what is known of it unmade.
private final class FileRecipe: Sendable {
    let size: Int
    let sources: [Int]?
    let preferredReadSize: Int?
    let make: @Sendable () -> VirtualFile

    init(size: Int, sources: [Int]?, preferredReadSize: Int?, make: @escaping @Sendable () -> VirtualFile) {
        self.size = size
        self.sources = sources
        self.preferredReadSize = preferredReadSize
        self.make = make
    }
}

/// Files made alike, each by its number: the group is held once, its files
/// by their sizes alone (8 bytes each of 330,000 xser tensor files, where a
/// recipe of each was two allocations and 180 bytes).
public final class RecipeGroup: Sendable {
    /// Member `i`'s size.
    public let sizes: [Int]
    let make: @Sendable (Int) -> VirtualFile

    /// A group of `count` files, each made by `make`, sized by one making each.
    public init(count: Int, make: @escaping @Sendable (Int) -> VirtualFile) {
        sizes = (0..<count).map { make($0).size }
        self.make = make
    }
}
