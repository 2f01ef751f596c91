#if canImport(Glibc)
import Glibc
#endif

/// A thin wrapper of inotify: watches directories and reports, by name, the
/// entries of theirs that were written, changed, renamed or removed. One
/// watch per directory (not per file): a trained 405B tag's 60,000 files sit
/// in about a thousand directories. It sees changes made through this node's
/// kernel only; on a network file system another node's writes are found by
/// stat (`SourceWatch`'s sweep).
final class DirectoryEvents {
    struct Event {
        let directory: Int32
        /// The entry's name; empty for an event on the directory itself.
        let name: String
        let mask: UInt32

        var isWrite: Bool { mask & UInt32(IN_MODIFY) != 0 }
        /// The directory itself went away or moved: its entries are unknown now.
        var isDirectoryGone: Bool { mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT) != 0 }
    }

    /// What a read of the queue found.
    enum Batch {
        case events([Event])
        /// The kernel dropped events (its queue was full): anything may have changed.
        case overflow
    }

    let descriptor: Int32
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)

    static let entryEvents = UInt32(IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE)
    static let directoryEvents = UInt32(IN_DELETE_SELF | IN_MOVE_SELF)

    /// nil when inotify is unavailable (its instance limit reached, say).
    init?() {
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else {
            buffer.deallocate()
            return nil
        }
    }

    deinit {
        close(descriptor)
        buffer.deallocate()
    }

    /// Watches `directory`; returns the watch, or minus the errno (ENOSPC:
    /// the user's `max_user_watches` is used up).
    func watch(_ directory: String) -> Int32 {
        let watch = inotify_add_watch(descriptor, directory, DirectoryEvents.entryEvents | DirectoryEvents.directoryEvents | UInt32(IN_ONLYDIR))
        return watch >= 0 ? watch : -errno
    }

    /// Waits up to `milliseconds` for events (or for `wake` to become
    /// readable), then returns what is queued.
    func wait(milliseconds: Int32, wake: Int32) -> Batch {
        var fds = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0), pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        _ = poll(&fds, nfds_t(wake >= 0 ? 2 : 1), milliseconds)
        return read()
    }

    /// Everything queued now, without waiting.
    func read() -> Batch {
        var events: [Event] = []
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            guard count > 0 else { return .events(events) }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= count {
                let base = buffer.baseAddress! + offset
                let watch = base.loadUnaligned(fromByteOffset: 0, as: Int32.self)
                let mask = base.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                let length = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                if mask & UInt32(IN_Q_OVERFLOW) != 0 { return .overflow }
                let nameBytes = UnsafeRawBufferPointer(start: base + MemoryLayout<inotify_event>.size, count: min(length, count - offset - MemoryLayout<inotify_event>.size))
                let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
                events.append(Event(directory: watch, name: name, mask: mask))
                offset += MemoryLayout<inotify_event>.size + length
            }
        }
    }
}
