#if canImport(Glibc)
import Glibc
#endif

/// How a target directory is named in messages: convert's `OUT`, or mount's
/// `--persist-to DIR`.
public struct TargetNaming: Equatable, Sendable {
    /// What a message about the directory starts with ("OUT /fsx/out").
    public let subject: String
    /// What else the user could give ("another OUT").
    public let alternative: String

    public init(subject: String, alternative: String) {
        self.subject = subject
        self.alternative = alternative
    }

    public static func out(_ directory: String) -> TargetNaming {
        TargetNaming(subject: "OUT \(directory)", alternative: "another OUT")
    }

    public static func persistTo(_ directory: String) -> TargetNaming {
        TargetNaming(subject: "--persist-to \(directory)", alternative: "another directory")
    }
}

/// Which files of a target directory belong to a layout, whoever wrote them
/// (ShardFS, NxD's converter, the trainer): these are the files a new layout
/// must rewrite or may not leave beside its own. Anything else in the
/// directory (`optim/`, `README`, `done`) is never touched.
public enum TargetFamily: Equatable, Sendable {
    /// NxD rank files under `model/`: `dp_rank_*` files (plain, xser
    /// references, `.info.pt`), `dp_rank_*.tensors/` folders and their files,
    /// and the older `tp_rank_*/` folders (`checkpoint.pt`).
    case rankFiles
    /// A Hugging Face checkpoint at the top: `*.safetensors` and
    /// `model.safetensors.index.json`.
    case huggingFace
    /// A DCP folder at the top: `*.distcp` files and `.metadata`.
    case dcp

    public init(_ format: CheckpointFormat) {
        switch format {
        case .hf: self = .huggingFace
        case .dcp: self = .dcp
        case .pt, .xser: self = .rankFiles
        }
    }

    /// Whether a layout of this family would hold a file at `path`
    /// (relative to the target directory).
    public func holds(_ path: String) -> Bool {
        switch self {
        case .rankFiles:
            return path.hasPrefix("model/dp_rank_") || path.hasPrefix("model/tp_rank_")
        case .huggingFace:
            return !path.contains("/") && (path.hasSuffix(".safetensors") || path == "model.safetensors.index.json")
        case .dcp:
            return !path.contains("/") && (path.hasSuffix(".distcp") || path == DCPPlan.metadataPath)
        }
    }
}

/// Paths a writer plans, asked one at a time: a set of them, or a plan's
/// files (`PlannedFiles`), whose 350,000 xser paths are never all spelt.
public struct PathSet: Sendable {
    private enum Paths: Sendable {
        case set(Set<String>)
        case files(PlannedFiles)
    }

    private let paths: Paths

    public init(_ paths: some Sequence<String>) {
        self.paths = .set(Set(paths))
    }

    public init(_ files: PlannedFiles) {
        paths = .files(files)
    }

    public func contains(_ path: String) -> Bool {
        switch paths {
        case let .set(set): return set.contains(path)
        case let .files(files): return files.contains(path: path)
        }
    }

    /// The folders holding the paths (relative, no trailing `/`), parents included.
    public var folders: Set<String> {
        switch paths {
        case let .files(files):
            return files.folders
        case let .set(set):
            var folders = Set<String>()
            for path in set {
                var folder = TargetDirectory.parent(of: path)
                while !folder.isEmpty, folders.insert(folder).inserted { folder = TargetDirectory.parent(of: folder) }
            }
            return folders
        }
    }
}

/// What a target directory holds, as far as a layout is concerned: its
/// manifest and the files of the family found in it. Gathered without
/// changing anything, so that a refusal leaves the directory as it was.
public struct TargetInventory: Equatable, Sendable {
    /// The manifest's layout: nil when there is no manifest, or (with
    /// `unreadableManifest`) when it cannot be read.
    public var layout: PersistManifest.Layout?
    public var unreadableManifest: ShardFSError?
    /// The manifest's finished entries (only with a layout).
    public var finished: [PersistManifest.FinishedFile] = []
    /// Files a layout holds (relative paths): those of the family found on
    /// disk, and those the manifest records that exist.
    public var files: Set<String> = []
    /// Folders of the family (relative, no trailing `/`): `P.tensors`, `tp_rank_*`.
    public var folders: Set<String> = []
    /// Temporaries left by writers (`.name.shardfs-tmp-PID`), relative, by
    /// the final path each stands for.
    public var temporaries: [String: [String]] = [:]
    /// Files of the family that are files of the source (same device and
    /// inode), by the source's name: a conversion into its own source.
    public var sourceFiles: [String: String] = [:]

    public init(layout: PersistManifest.Layout? = nil, finished: [PersistManifest.FinishedFile] = [],
                files: Set<String> = [], folders: Set<String> = []) {
        self.layout = layout
        self.finished = finished
        self.files = files
        self.folders = folders
    }
}

/// What a writer does to a target directory before writing (see `TargetDirectory.decide`).
public struct TargetDecision: Equatable, Sendable {
    /// Forget the manifest's layout and its entries (another layout, `--force`).
    public var replaceLayout = false
    /// Files to remove (relative): another layout's, not rewritten by this one.
    public var removeFiles: [String] = []
    /// Folders to remove once emptied (relative), deepest first.
    public var removeFolders: [String] = []

    public init(replaceLayout: Bool = false, removeFiles: [String] = [], removeFolders: [String] = []) {
        self.replaceLayout = replaceLayout
        self.removeFiles = removeFiles
        self.removeFolders = removeFolders
    }
}

/// The one mechanism by which `shardfs convert OUT` and `shardfs mount
/// --persist-to DIR` take a directory for a layout: refuse one that holds
/// another layout or source (from its manifest) or rank files of another
/// layout (without one), naming the difference and the files, unless
/// `force`, which removes what the new layout will not rewrite; then claim
/// it in the manifest and hand back the files recorded as finished.
public struct TargetDirectory: Sendable {
    public let directory: String
    public let naming: TargetNaming
    public let manifest: PersistManifest

    public init(directory: String, naming: TargetNaming) {
        self.directory = directory
        self.naming = naming
        manifest = PersistManifest(directory: directory, naming: naming)
    }

    /// What `prepare` did.
    public struct Prepared: Sendable {
        /// The files recorded as finished for this layout, by path.
        public var finished: [String: PersistManifest.FinishedFile]
        /// Files of another layout removed (`force`), relative.
        public var removed: [String]
    }

    /// Takes the directory for `layout` (see the type): checks, refuses or
    /// claims, removes another layout's files (`force`) and the temporaries
    /// that killed writers left of `mine` or of files no longer planned.
    /// `planned` is every path of the whole layout (all `--part`s); nil when
    /// unknown, and then only the manifest is compared.
    public func prepare(layout: PersistManifest.Layout, family: TargetFamily, planned: PathSet?, mine: PathSet,
                        sources: [SourceFile], force: Bool) throws(ShardFSError) -> Prepared {
        let inventory = inspect(family: family, sources: sources, expecting: layout)
        let decision = try TargetDirectory.decide(inventory, wanted: layout, planned: planned, mine: mine, force: force, naming: naming)
        if inventory.unreadableManifest != nil || decision.replaceLayout {
            try manifest.replace(with: layout)
        } else if inventory.layout != layout {
            // A rerun's manifest was just found to hold `layout` (a 70B-count
            // xser tag's is 50 MB of JSON): not read a second time.
            _ = try manifest.claim(layout, force: false)
        }
        var removed: [String] = []
        var touched = Set<String>()
        for path in decision.removeFiles where unlink(directory + "/" + path) == 0 {
            removed.append(path)
            touched.insert(TargetDirectory.parent(of: path))
        }
        for folder in decision.removeFolders {
            // Temporaries of its files go with it; anything else keeps it.
            for temporary in inventory.temporaries.filter({ TargetDirectory.parent(of: $0.key) == folder }).values.joined() {
                unlink(directory + "/" + temporary)
            }
            if rmdir(directory + "/" + folder) == 0 {
                touched.remove(folder)
                touched.insert(TargetDirectory.parent(of: folder))
            }
        }
        // Temporaries: of this writer's files (any pid: with --part they are
        // this writer's alone), and of files no layout here writes any more.
        for (final, temporaries) in inventory.temporaries
        where mine.contains(final) || (planned.map { !$0.contains(final) } ?? false) && family.holds(final) {
            for temporary in temporaries where unlink(directory + "/" + temporary) == 0 {
                touched.insert(TargetDirectory.parent(of: temporary))
            }
        }
        for folder in touched.sorted() {
            try Directories.sync(folder.isEmpty ? directory : directory + "/" + folder)
        }
        let finished = decision.replaceLayout || inventory.unreadableManifest != nil ? [] : try manifest.finished()
        return Prepared(finished: Dictionary(finished.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a }), removed: removed)
    }

    /// Makes `top` (relative: `model`, or "" for the directory itself) and
    /// every other directory the files at `paths` (relative) need (an xser
    /// `p.tensors/`), each made durable in its parent, before any file is
    /// written: convert and the materialiser alike. Returns the directories
    /// made below `top`, parents first, for a writer that fails to remove.
    public func makeDirectories(for paths: some Sequence<String>, top: String) throws(ShardFSError) -> [String] {
        let root = top.isEmpty ? directory : directory + "/" + top
        var directories = [root]
        var seen = Set(directories)
        for path in paths {
            guard let slash = path.lastIndex(of: "/") else { continue }
            let folder = directory + "/" + path[..<slash]
            if seen.insert(folder).inserted { directories.append(folder) }
        }
        var created: [String] = []
        for (index, folder) in directories.enumerated() {
            let made = try Directories.makeDurable(folder)
            if index > 0 { created += made }
        }
        return created
    }

    /// The decision, from what the directory holds (pure; see the type).
    /// Refuses (naming `naming.subject`, the difference and the files) a
    /// manifest of another layout or source, and files of the family that
    /// `planned` does not name, unless `force`; always refuses a directory
    /// whose files of the family are the source's own.
    public static func decide(_ inventory: TargetInventory, wanted: PersistManifest.Layout, planned: Set<String>?,
                              mine: Set<String>, force: Bool, naming: TargetNaming) throws(ShardFSError) -> TargetDecision {
        try decide(inventory, wanted: wanted, planned: planned.map { PathSet($0) }, mine: PathSet(mine), force: force, naming: naming)
    }

    public static func decide(_ inventory: TargetInventory, wanted: PersistManifest.Layout, planned: PathSet?,
                              mine: PathSet, force: Bool, naming: TargetNaming) throws(ShardFSError) -> TargetDecision {
        if let (path, source) = inventory.sourceFiles.min(by: { $0.key < $1.key }) {
            throw ShardFSError.badLayout(flag: naming.subject, reason: "holds \(path), which is the source's \(source): writing here would overwrite or remove the source; use \(naming.alternative)")
        }
        if let error = inventory.unreadableManifest, !force {
            throw ShardFSError.badLayout(flag: naming.subject, reason: "holds a manifest that cannot be read (\(error)); use \(naming.alternative), or --force to replace it")
        }
        let differs = inventory.layout.map { $0 != wanted } ?? (inventory.unreadableManifest != nil)
        var staleFiles: [String]
        var staleFolders: [String]
        if let planned {
            staleFiles = inventory.files.filter { !planned.contains($0) }.sorted()
            staleFolders = inventory.folders.subtracting(planned.folders).sorted()
        } else {
            // The whole layout unknown: only what the replaced manifest
            // recorded, and not this writer's own files.
            staleFiles = differs ? inventory.finished.map(\.path).filter { inventory.files.contains($0) && !mine.contains($0) }.sorted() : []
            staleFolders = []
        }
        if differs, !force {
            let what = inventory.layout.map { PersistManifest.difference($0, wanted) } ?? "layout"
            let held = inventory.files.sorted() + emptyFolders(staleFolders, files: inventory.files)
            let files = held.isEmpty ? "" : ", in \(held.count == 1 ? "1 file" : "\(held.count) files"): \(list(held))"
            throw ShardFSError.badLayout(flag: naming.subject,
                                         reason: "holds another \(what)\(files); use \(naming.alternative), or --force to replace it")
        }
        let stale = staleFiles + emptyFolders(staleFolders, files: Set(staleFiles))
        if !stale.isEmpty, !force {
            throw ShardFSError.badLayout(
                flag: naming.subject,
                reason: "holds \(stale.count == 1 ? "a file" : "\(stale.count) files") of another layout, which this one (\(wanted.layout)) does not write: \(list(stale)); use \(naming.alternative), or --force to remove \(stale.count == 1 ? "it" : "them")")
        }
        return TargetDecision(replaceLayout: differs, removeFiles: staleFiles,
                              removeFolders: staleFolders.sorted { a, b in
                                  let (depthA, depthB) = (a.split(separator: "/").count, b.split(separator: "/").count)
                                  return depthA != depthB ? depthA > depthB : a < b
                              })
    }

    /// Folders holding none of `files`, shown as `folder/`: an empty
    /// `P.tensors/` makes the trainer take the tag for xser.
    static func emptyFolders(_ folders: [String], files: Set<String>) -> [String] {
        folders.filter { folder in !files.contains { $0.hasPrefix(folder + "/") } }.map { $0 + "/" }
    }

    /// Up to 8 names, then how many more.
    static func list(_ names: [String]) -> String {
        let shown = names.prefix(8).joined(separator: ", ")
        return names.count > 8 ? shown + " and \(names.count - 8) more" : shown
    }

    static func parent(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
    }

    /// What the directory holds (see `TargetInventory`); reads only. A
    /// manifest holding exactly `expecting` (a rerun's) is recognised by its
    /// bytes, not decoded: a 70B-count xser tag's is 50 MB of JSON, which
    /// Foundation's decoder turns into hundreds.
    public func inspect(family: TargetFamily, sources: [SourceFile], expecting: PersistManifest.Layout? = nil) -> TargetInventory {
        var inventory = TargetInventory()
        do throws(ShardFSError) {
            if let expecting, manifest.layoutFileHolds(expecting) {
                inventory.layout = expecting
            } else {
                inventory.layout = try manifest.readLayout()
            }
            if inventory.layout != nil { inventory.finished = try manifest.finished() }
        } catch {
            inventory.unreadableManifest = error
        }
        // By number: a name each for a 330,000-file source is 50 MB.
        var sourceIDs: [FileID: Int] = [:]
        sourceIDs.reserveCapacity(sources.count)
        for (index, source) in sources.enumerated() {
            sourceIDs[FileID(device: UInt64(source.identity.device), inode: UInt64(source.identity.inode))] = index
        }
        func add(file path: String, _ id: FileID) {
            inventory.files.insert(path)
            if let source = sourceIDs[id] { inventory.sourceFiles[path] = sources[source].name }
        }
        func scan(_ relative: String, _ body: (DirectoryEntry) -> Void) {
            for entry in TargetDirectory.entries(of: relative.isEmpty ? directory : directory + "/" + relative) {
                let path = relative.isEmpty ? entry.name : relative + "/" + entry.name
                if entry.name.hasPrefix("."), let marker = entry.name.range(of: ".shardfs-tmp-") {
                    let final = String(entry.name[entry.name.index(after: entry.name.startIndex)..<marker.lowerBound])
                    inventory.temporaries[relative.isEmpty ? final : relative + "/" + final, default: []].append(path)
                } else if !entry.name.hasPrefix(".") || (family == .dcp && path == DCPPlan.metadataPath) {
                    body(DirectoryEntry(name: entry.name, path: path, kind: entry.kind, id: entry.id))
                }
            }
        }
        switch family {
        case .rankFiles:
            scan("model") { entry in
                guard family.holds(entry.path) else { return }
                switch entry.kind {
                case .regular:
                    add(file: entry.path, entry.id)
                case .directory where entry.name.hasPrefix("tp_rank_") || entry.name.hasSuffix(".tensors"):
                    inventory.folders.insert(entry.path)
                    scan(entry.path) { inner in if inner.kind == .regular { add(file: inner.path, inner.id) } }
                default:
                    break
                }
            }
        case .huggingFace, .dcp:
            scan("") { entry in
                if entry.kind == .regular, family.holds(entry.path) { add(file: entry.path, entry.id) }
            }
        }
        // Recorded files outside the family (another format's): theirs too.
        for entry in inventory.finished where !inventory.files.contains(entry.path) {
            var info = stat()
            if lstat(directory + "/" + entry.path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG {
                add(file: entry.path, FileID(device: UInt64(info.st_dev), inode: UInt64(info.st_ino)))
            }
        }
        return inventory
    }

    struct FileID: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    struct DirectoryEntry {
        enum Kind { case regular, directory, other }
        let name: String
        var path = ""
        let kind: Kind
        let id: FileID
    }

    /// A directory's entries (none when it does not exist), with their kind
    /// and identity from `readdir` where the file system gives them (no
    /// `stat` per file: on FSx each is a round trip).
    static func entries(of path: String) -> [DirectoryEntry] {
        guard let stream = opendir(path) else { return [] }
        defer { closedir(stream) }
        var info = stat()
        guard fstat(dirfd(stream), &info) == 0 else { return [] }
        let device = UInt64(info.st_dev)
        var entries: [DirectoryEntry] = []
        while let entry = readdir(stream) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            var kind: DirectoryEntry.Kind
            switch Int32(entry.pointee.d_type) {
            case Int32(DT_REG): kind = .regular
            case Int32(DT_DIR): kind = .directory
            case Int32(DT_UNKNOWN):
                var info = stat()
                guard lstat(path + "/" + name, &info) == 0 else { continue }
                kind = (info.st_mode & S_IFMT) == S_IFREG ? .regular : (info.st_mode & S_IFMT) == S_IFDIR ? .directory : .other
            default: kind = .other
            }
            entries.append(DirectoryEntry(name: name, kind: kind, id: FileID(device: device, inode: UInt64(entry.pointee.d_ino))))
        }
        return entries.sorted { $0.name < $1.name }
    }
}
