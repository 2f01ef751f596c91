import CFuse

#if canImport(Glibc)
import Glibc
#endif

// The libfuse low-level callbacks. They are file-scope functions on purpose:
// a closure written in `main` or `@main` is main-actor isolated and dies with
// SIGILL when libfuse calls it from a worker thread. Each one only translates
// between libfuse and `FUSEServer`/`MountedFileSystem`.

private func server(_ req: fuse_req_t?) -> FUSEServer {
    Unmanaged<FUSEServer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

private func entryParameters(_ server: FUSEServer, _ inode: UInt64) -> fuse_entry_param? {
    guard let attributes = server.fileSystem.attributes(inode) else { return nil }
    var entry = fuse_entry_param()
    entry.ino = inode
    entry.generation = 1
    entry.attr = attributes
    entry.attr_timeout = server.options.timeout
    entry.entry_timeout = server.options.timeout
    return entry
}

private func opInit(_ userdata: UnsafeMutableRawPointer?, _ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    guard let userdata, let conn else { return }
    let server = Unmanaged<FUSEServer>.fromOpaque(userdata).takeUnretainedValue()
    conn.pointee.max_read = UInt32(server.options.maximumRead)
    if server.options.splice {
        for capability in [FUSE_CAP_SPLICE_WRITE, FUSE_CAP_SPLICE_MOVE] where conn.pointee.capable & UInt32(capability) != 0 {
            conn.pointee.want |= UInt32(capability)
        }
    }
    server.negotiated(splice: conn.pointee.want & UInt32(FUSE_CAP_SPLICE_WRITE) != 0)
}

/// The hidden status file's attributes: its size is that of a fresh
/// snapshot (reads are direct_io, so a later, longer snapshot still reads whole).
private func statusAttributes(_ server: FUSEServer) -> stat {
    var attributes = server.fileSystem.attributes(FileTree.rootInode)!
    attributes.st_ino = UInt(server.statusInode)
    attributes.st_mode = S_IFREG | 0o444
    attributes.st_nlink = 1
    attributes.st_size = server.statusBytes().count
    return attributes
}

private func opLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let server = server(req)
    if parent == FileTree.rootInode, let name, String(cString: name) == MountStatus.fileName {
        var entry = fuse_entry_param()
        entry.ino = server.statusInode
        entry.generation = 1
        entry.attr = statusAttributes(server)
        fuse_reply_entry(req, &entry)  // zero timeouts: always asked afresh
        return
    }
    guard let name, let node = server.fileSystem.tree.lookup(parent: parent, name: String(cString: name)),
          var entry = entryParameters(server, node.inode) else {
        fuse_reply_err(req, ENOENT)
        return
    }
    fuse_reply_entry(req, &entry)
}

private func opGetattr(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    if inode == server.statusInode {
        var attributes = statusAttributes(server)
        fuse_reply_attr(req, &attributes, 0)
        return
    }
    guard var attributes = server.fileSystem.attributes(inode) else {
        fuse_reply_err(req, ENOENT)
        return
    }
    fuse_reply_attr(req, &attributes, server.options.timeout)
}

private func opOpen(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    if inode == server.statusInode, let fi {
        guard fi.pointee.flags & O_ACCMODE == O_RDONLY else { fuse_reply_err(req, EROFS); return }
        fi.pointee.fh = server.openStatus()
        fi.pointee.direct_io = 1
        fuse_reply_open(req, fi)
        return
    }
    guard let fi, let node = server.fileSystem.tree.node(inode) else { fuse_reply_err(req, ENOENT); return }
    guard !node.isDirectory else { fuse_reply_err(req, EISDIR); return }
    guard fi.pointee.flags & O_ACCMODE == O_RDONLY, fi.pointee.flags & O_TRUNC == 0 else { fuse_reply_err(req, EROFS); return }
    if let (source, problem) = server.fileSystem.sourceProblem(inode) {
        server.reportSourceProblem(file: node.name, source: source, problem: problem)
        fuse_reply_err(req, EIO)
        return
    }
    server.fileSystem.opened(inode)
    if server.options.directIO(forSize: node.size) {
        fi.pointee.direct_io = 1
    } else {
        // Content is a pure function of the sources: keep cached pages across opens.
        fi.pointee.keep_cache = 1
    }
    fuse_reply_open(req, fi)
}

private func opRead(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    if inode == server.statusInode {
        let snapshot = fi.flatMap { server.statusSnapshot($0.pointee.fh) } ?? []
        let start = min(max(0, offset), snapshot.count), end = min(snapshot.count, start + size)
        snapshot[start..<end].withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress, $0.count) }
        return
    }
    server.readStarted()
    var served = 0
    defer { server.readEnded(bytes: served) }
    let result = server.fileSystem.read(inode, offset: offset, count: size, allowSplice: server.spliceEnabled) { segments, buffer in
        guard let vector = shardfs_bufvec_create(segments.count) else { return ENOMEM }
        defer { free(vector) }
        for (i, segment) in segments.enumerated() {
            switch segment {
            case let .buffer(range):
                shardfs_bufvec_set_memory(vector, i, buffer.baseAddress! + range.lowerBound, range.count)
            case let .persisted(descriptor, offset, count), let .source(descriptor, offset, count):
                shardfs_bufvec_set_fd(vector, i, descriptor, offset, count)
            }
        }
        // A reply made in our buffer alone goes out with one writev: through
        // the splice path libfuse would first copy it into a pipe, a third
        // copy of those bytes. A source's pages are spliced without MOVE:
        // the kernel may otherwise take them out of the source's page cache.
        var flags = FUSE_BUF_NO_SPLICE
        for segment in segments {
            if case .source = segment { flags = fuse_buf_copy_flags(rawValue: 0); break }
            if case .persisted = segment { flags = FUSE_BUF_SPLICE_MOVE }
        }
        let status = fuse_reply_data(req, vector, flags)
        served = segments.reduce(0) { $0 + $1.count }
        return status < 0 ? -status : 0
    }
    switch result {
    case .success:
        break  // replied (a failed reply means the request was interrupted: nothing more to do)
    case let .failure(error):
        let name = server.fileSystem.tree.node(inode)?.name ?? "inode \(inode)"
        switch error {
        case .notFound: fuse_reply_err(req, ENOENT)
        case .isDirectory: fuse_reply_err(req, EISDIR)
        case let .sourceChanged(source, problem):
            server.reportSourceProblem(file: name, source: source, problem: problem)
            fuse_reply_err(req, EIO)
        case let .io(failure):
            server.logger.error("read of \(name) at \(offset) failed: \(failure)")
            fuse_reply_err(req, EIO)
        }
    }
}

private func opRelease(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    if inode == server.statusInode, let fi {
        server.closeStatus(fi.pointee.fh)
    } else {
        server.fileSystem.closed(inode)
    }
    fuse_reply_err(req, 0)
}

private func opOpendir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    guard let fi, let node = server.fileSystem.tree.node(inode) else { fuse_reply_err(req, ENOENT); return }
    guard node.isDirectory else { fuse_reply_err(req, ENOTDIR); return }
    fi.pointee.cache_readdir = 1
    fi.pointee.keep_cache = 1
    fuse_reply_open(req, fi)
}

private func opReaddir(_ req: fuse_req_t?, _ inode: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let server = server(req)
    guard let entries = server.fileSystem.tree.entries(of: inode) else { fuse_reply_err(req, ENOTDIR); return }
    let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
    defer { buffer.deallocate() }
    var used = 0
    var index = Int(offset)
    while index < entries.count {
        var attributes = stat()
        attributes.st_ino = UInt(entries[index].node.inode)
        attributes.st_mode = entries[index].node.isDirectory ? S_IFDIR : S_IFREG
        let needed = entries[index].name.withCString {
            fuse_add_direntry(req, buffer + used, size - used, $0, &attributes, off_t(index + 1))
        }
        if needed > size - used { break }
        used += needed
        index += 1
    }
    fuse_reply_buf(req, buffer, used)
}

private func opStatfs(_ req: fuse_req_t?, _ inode: fuse_ino_t) {
    let server = server(req)
    var info = statvfs()
    info.f_bsize = 4096
    info.f_frsize = 4096
    info.f_blocks = UInt(server.totalBytes / 4096 + 1)
    info.f_files = UInt(server.fileSystem.tree.nodes.count)
    info.f_namemax = 255
    fuse_reply_statfs(req, &info)
}

/// The operations table. Everything not set (write, setattr, create, ...)
/// answers ENOSYS, and the mount is read-only (`ro`), so the kernel refuses
/// writes with EROFS before they reach us.
func shardfsOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = opInit
    ops.lookup = opLookup
    ops.getattr = opGetattr
    ops.open = opOpen
    ops.read = opRead
    ops.release = opRelease
    ops.opendir = opOpendir
    ops.readdir = opReaddir
    ops.statfs = opStatfs
    return ops
}
