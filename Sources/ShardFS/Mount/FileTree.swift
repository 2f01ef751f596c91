/// The namespace a mount shows: directories and virtual files, with stable
/// inode numbers (assigned in plan order, so the same layout always gets the
/// same numbers). Pure data: the FUSE adapter and tests both drive it.
public struct FileTree: Sendable {
    public enum Kind: Sendable {
        case directory(children: [String: UInt64], order: [String])
        case file(PlannedFile)
    }

    public struct Node: Sendable {
        public let inode: UInt64
        public let parent: UInt64
        public let name: String
        public let kind: Kind

        public var isDirectory: Bool {
            if case .directory = kind { return true }
            return false
        }

        public var size: Int {
            switch kind {
            case let .file(file): return file.size
            case let .directory(_, order): return order.count
            }
        }
    }

    public static let rootInode: UInt64 = 1

    /// Indexed by inode - 1.
    public private(set) var nodes: [Node]

    /// A tree holding `files` at their relative paths (e.g. `model/x.pt`).
    public init(files: [(path: String, file: PlannedFile)]) {
        var nodes: [Node] = [Node(inode: FileTree.rootInode, parent: FileTree.rootInode, name: "", kind: .directory(children: [:], order: []))]
        func add(_ name: String, under parent: UInt64, kind: Kind) -> UInt64 {
            let inode = UInt64(nodes.count + 1)
            nodes.append(Node(inode: inode, parent: parent, name: name, kind: kind))
            guard case let .directory(children, order) = nodes[Int(parent - 1)].kind else { preconditionFailure("parent is a file") }
            var newChildren = children
            newChildren[name] = inode
            let p = nodes[Int(parent - 1)]
            nodes[Int(parent - 1)] = Node(inode: p.inode, parent: p.parent, name: p.name, kind: .directory(children: newChildren, order: order + [name]))
            return inode
        }
        for (path, file) in files {
            var parent = FileTree.rootInode
            let components = path.split(separator: "/").map(String.init)
            for directory in components.dropLast() {
                if case let .directory(children, _) = nodes[Int(parent - 1)].kind, let existing = children[directory] {
                    parent = existing
                } else {
                    parent = add(directory, under: parent, kind: .directory(children: [:], order: []))
                }
            }
            _ = add(components.last!, under: parent, kind: .file(file))
        }
        self.nodes = nodes
    }

    public func node(_ inode: UInt64) -> Node? {
        guard inode >= 1, inode <= UInt64(nodes.count) else { return nil }
        return nodes[Int(inode - 1)]
    }

    /// The node at a relative path (`model/x.pt`).
    public func node(path: String) -> Node? {
        var node = self.node(FileTree.rootInode)
        for component in path.split(separator: "/") {
            guard let current = node else { return nil }
            node = lookup(parent: current.inode, name: String(component))
        }
        return node
    }

    public func lookup(parent: UInt64, name: String) -> Node? {
        guard let p = node(parent), case let .directory(children, _) = p.kind, let inode = children[name] else { return nil }
        return node(inode)
    }

    /// Entries of a directory in listing order, with `.` and `..` first.
    public func entries(of inode: UInt64) -> [(name: String, node: Node)]? {
        guard let d = node(inode), case let .directory(children, order) = d.kind else { return nil }
        var result: [(name: String, node: Node)] = [(".", d), ("..", node(d.parent)!)]
        for name in order { result.append((name, node(children[name]!)!)) }
        return result
    }

    /// Number of subdirectories, for a directory's link count.
    public func subdirectoryCount(of inode: UInt64) -> Int {
        guard let d = node(inode), case let .directory(children, _) = d.kind else { return 0 }
        return children.values.filter { node($0)?.isDirectory == true }.count
    }
}
