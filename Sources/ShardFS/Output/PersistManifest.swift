import Foundation
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The record of a written layout, under `DIR/.shardfs/` (convert's OUT or
/// mount's --persist-to DIR; `TargetDirectory` decides what to do with it):
///
/// - `layout.json`: the layout and the source fingerprints the files of DIR
///   are made from. Written once, by whichever writer comes first (several
///   daemons or convert tasks may share DIR with `--part`); later writers
///   compare and refuse a different one.
/// - `finished/<file>.json`: one per file complete under its final name,
///   with its size and CRC-32, written after the file's rename and the fsync
///   of its directory. One entry per file, not one shared list, so that
///   writers on other nodes never race on an update.
///
/// Nothing is written into DIR itself but the files of the layout: a `done`
/// file in a tag makes the trainer resume from it (docs/formats/nxd-layout.md).
public struct PersistManifest: Sendable {
    public struct Layout: Codable, Equatable, Sendable {
        public var version = 1
        public let layout: String
        public let sources: [SourceFingerprint]

        /// The document `JSONDecoder` reads back, keys sorted, one source a
        /// line, written directly: `JSONEncoder` took 260 MB for the
        /// 300,000 fingerprints of a 70B-count xser training tag (its
        /// optimizer's tensor files). Given to `emit` in pieces of about
        /// `pieceBytes`, so that neither writing it nor comparing a file with
        /// it holds the whole (50 MB for that tag).
        func writeJSON(pieceBytes: Int = 1 << 20, _ emit: ([UInt8]) throws(ShardFSError) -> Void) throws(ShardFSError) {
            var out: [UInt8] = []
            out.reserveCapacity(pieceBytes + 4096)
            out.append(contentsOf: "{\"layout\": ".utf8)
            out += JSONText.serde(layout)
            out.append(contentsOf: ", \"sources\": [".utf8)
            for (index, source) in sources.enumerated() {
                out.append(contentsOf: "\(index == 0 ? "" : ",")\n  {\"headerCRC32\": \(source.headerCRC32), \"mtimeNanoseconds\": \(source.mtimeNanoseconds), \"name\": ".utf8)
                out += JSONText.serde(source.name)
                out.append(contentsOf: ", \"size\": \(source.size)}".utf8)
                if out.count >= pieceBytes {
                    try emit(out)
                    out.removeAll(keepingCapacity: true)
                }
            }
            out.append(contentsOf: "\n], \"version\": \(version)}\n".utf8)
            try emit(out)
        }

        /// The whole document (small layouts, tests).
        var json: Data {
            var data = Data()
            try? writeJSON { data.append(contentsOf: $0) }
            return data
        }
    }

    public struct FinishedFile: Codable, Equatable, Sendable {
        public let path: String
        public let size: Int
        public let crc32: UInt32

        /// Why the file this entry records cannot be kept as it is in
        /// `directory`, for a layout whose file there is `plannedSize` bytes:
        /// it must be a regular file of its own (no symlink is followed) of
        /// the recorded size, which must be the planned size. Nil when it
        /// may be kept (its CRC-32 is checked by whoever reads it back).
        /// `convert`'s resume and the materialiser both judge by this.
        public func problem(in directory: String, plannedSize: Int) -> String? {
            var info = stat()
            guard size == plannedSize else { return "its entry records \(size) bytes, this layout's file has \(plannedSize)" }
            guard lstat(directory + "/" + path, &info) == 0 else { return "it is missing" }
            guard info.st_mode & S_IFMT == S_IFREG else { return "it is not a regular file" }
            guard Int(info.st_size) == size else { return "it is \(info.st_size) bytes, its entry says \(size)" }
            return nil
        }
    }

    public let directory: String
    /// How DIR is named in refusals.
    public let naming: TargetNaming
    var stateDirectory: String { directory + "/.shardfs" }
    var layoutPath: String { stateDirectory + "/layout.json" }
    var finishedDirectory: String { stateDirectory + "/finished" }

    public init(directory: String, naming: TargetNaming? = nil) {
        self.directory = directory
        self.naming = naming ?? .persistTo(directory)
    }

    /// The entry name of a file path (which may hold `/`).
    static func entryName(_ path: String) -> String {
        path.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F") + ".json"
    }

    /// Makes DIR hold `layout`: records it when DIR has none, accepts an
    /// equal one, and refuses another (naming the difference) unless `force`,
    /// which forgets the old one and its finished files (returned, so the
    /// caller can remove those it will not rewrite).
    public func claim(_ layout: Layout, force: Bool) throws(ShardFSError) -> [FinishedFile] {
        // The common case, a rerun of the same layout, compared as bytes
        // without holding either document; any other is decoded.
        if layoutFileHolds(layout) { return [] }
        if let existing = try readLayout() {
            if existing == layout { return [] }
            guard force else {
                throw ShardFSError.badLayout(flag: naming.subject,
                                             reason: "holds another \(Self.difference(existing, layout)); use \(naming.alternative), or --force to replace it")
            }
            let stale = try finished()
            try replace(with: layout)
            return stale
        }
        try makeDirectory(finishedDirectory)
        // Entries without a layout (its file removed by hand) vouch for
        // nothing: forget them before they could pass for this layout's.
        forgetAll()
        try writeLayout(layout)
        return []
    }

    /// Forgets whatever DIR's manifest holds (another layout, or one that
    /// cannot be read) and records `layout`.
    public func replace(with layout: Layout) throws(ShardFSError) {
        try makeDirectory(finishedDirectory)
        forgetAll()
        unlink(layoutPath)
        try Directories.sync(finishedDirectory)
        try writeLayout(layout)
    }

    private func forgetAll() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: finishedDirectory)) ?? [] where name.hasSuffix(".json") {
            unlink(finishedDirectory + "/" + name)
        }
    }

    /// Whether `layout.json` holds exactly the bytes `layout` writes, read
    /// a piece at a time.
    func layoutFileHolds(_ layout: Layout) -> Bool {
        guard let fd = try? FileDescriptor.open(FilePath(layoutPath), .readOnly, options: [.closeOnExec]) else { return false }
        defer { try? fd.close() }
        var same = true, offset = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        try? layout.writeJSON { (piece) throws(ShardFSError) in
            guard same else { return }
            if buffer.count < piece.count { buffer = [UInt8](repeating: 0, count: piece.count) }
            let read = buffer.withUnsafeMutableBytes { bytes in
                (try? fd.readExactly(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<piece.count]),
                                     path: layoutPath, name: layoutPath)) != nil
            }
            same = read && buffer.prefix(piece.count).elementsEqual(piece)
            offset += piece.count
        }
        var extra: UInt8 = 0
        let more = (try? withUnsafeMutableBytes(of: &extra) { try fd.read(fromAbsoluteOffset: Int64(offset), into: $0) }) ?? 1
        return same && more == 0
    }

    private func writeLayout(_ layout: Layout) throws(ShardFSError) {
        // link() fails if another writer got there first: then theirs must match.
        let temporary = try writeTemporary(near: layoutPath) { (emit) throws(ShardFSError) in try layout.writeJSON(emit) }
        defer { unlink(temporary) }
        if link(temporary, layoutPath) != 0 {
            guard errno == EEXIST else { throw ShardFSError.io(path: layoutPath, operation: "link", errno: errno) }
            if let existing = try readLayout(), existing != layout {
                throw ShardFSError.badLayout(flag: naming.subject,
                                             reason: "was just claimed by another writer with another \(Self.difference(existing, layout))")
            }
        }
        try Directories.syncParent(of: layoutPath)
    }

    /// What differs between the layout DIR holds and the wanted one.
    static func difference(_ existing: Layout, _ wanted: Layout) -> String {
        if existing.layout != wanted.layout {
            return "layout (\(existing.layout)), not this one (\(wanted.layout))"
        }
        let old = Dictionary(existing.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for source in wanted.sources {
            guard let before = old[source.name] else { return "source (it has no \(source.name))" }
            if let change = source.difference(from: before) { return "source: \(change)" }
        }
        let names = Set(wanted.sources.map(\.name))
        if let extra = existing.sources.first(where: { !names.contains($0.name) }) {
            return "source (made also from \(extra.name), which this one lacks)"
        }
        return "manifest version (\(existing.version), not \(wanted.version))"
    }

    func readLayout() throws(ShardFSError) -> Layout? {
        guard let data = FileManager.default.contents(atPath: layoutPath) else { return nil }
        do { return try JSONDecoder().decode(Layout.self, from: data) } catch {
            throw ShardFSError.badSource(file: layoutPath, reason: "is not a ShardFS manifest (\(error)); remove \(stateDirectory) or use another directory")
        }
    }

    /// The files recorded as finished.
    public func finished() throws(ShardFSError) -> [FinishedFile] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: finishedDirectory)) ?? []
        var entries: [FinishedFile] = []
        for name in names.sorted() where name.hasSuffix(".json") {
            // A torn entry cannot exist (written by rename), but an unreadable
            // one only costs a rewrite of its file: skip it.
            guard let data = FileManager.default.contents(atPath: finishedDirectory + "/" + name),
                  let entry = try? JSONDecoder().decode(FinishedFile.self, from: data) else { continue }
            entries.append(entry)
        }
        return entries
    }

    /// Records `entry` as finished, after its file's rename and the fsync of
    /// its directory. Under a temporary name and renamed, but not fsynced:
    /// a crash can lose the entry (its file is then rewritten) or, on some
    /// file systems, leave it empty (unreadable, skipped: the same), never
    /// make it vouch for a file that is not complete. Two fsyncs per file
    /// cost more than the writing of xser's many small files.
    public func recordFinished(_ entry: FinishedFile) throws(ShardFSError) {
        let path = finishedDirectory + "/" + Self.entryName(entry.path)
        let data: Data
        do { data = try JSONEncoder.sorted.encode(entry) } catch { throw ShardFSError.io(path: path, operation: "encode", errno: EINVAL) }
        let temporary = try writeTemporary(near: path, durable: false) { (emit) throws(ShardFSError) in try emit([UInt8](data)) }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw ShardFSError.io(path: path, operation: "rename", errno: code)
        }
    }

    /// Forgets `path` (its file is about to be rewritten).
    public func forget(_ path: String) {
        unlink(finishedDirectory + "/" + Self.entryName(path))
    }

    /// Writes what `produce` emits under a temporary name beside `path`
    /// (fsynced if `durable`).
    private func writeTemporary(near path: String, durable: Bool = true,
                                _ produce: (([UInt8]) throws(ShardFSError) -> Void) throws(ShardFSError) -> Void) throws(ShardFSError) -> String {
        let temporary = VirtualFileWriter.temporaryPath(for: path)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ShardFSError.io(path: temporary, operation: "create", errno: errno) }
        defer { close(fd) }
        do throws(ShardFSError) {
            try produce { (piece) throws(ShardFSError) in
                let written = piece.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                guard written == piece.count else {
                    throw ShardFSError.io(path: temporary, operation: "write", errno: written < 0 ? errno : ENOSPC)
                }
            }
            guard !durable || fsync(fd) == 0 else { throw ShardFSError.io(path: temporary, operation: "fsync", errno: errno) }
        } catch {
            unlink(temporary)
            throw error
        }
        return temporary
    }

    private func makeDirectory(_ path: String) throws(ShardFSError) {
        try Directories.makeDurable(path)
    }
}

extension JSONEncoder {
    /// Stable output: sorted keys, so equal manifests are equal bytes.
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return encoder
    }
}
