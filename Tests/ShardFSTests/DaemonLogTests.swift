import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's default log: a directory of its own user, a name made of the
/// whole mount path and the host, and no symlink followed on the way.
@Suite struct DaemonLogTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    @Test func nameIsTheWholePathAndTheHost() {
        #expect(DaemonLog.fileName(mountpoint: "/mnt/llama3-70b-tp32pp8", host: "ip-10-1-2-3")
                == "mnt%2Fllama3-70b-tp32pp8@ip-10-1-2-3.log")
        // The old default named both of these /tmp/shardfs-model.log.
        #expect(DaemonLog.fileName(mountpoint: "/a/model", host: "h") == "a%2Fmodel@h.log")
        #expect(DaemonLog.fileName(mountpoint: "/b/model", host: "h") == "b%2Fmodel@h.log")
        // '_' stays, and what could be read back ambiguously is encoded: '%', '@', '/' and bytes of UTF-8.
        #expect(DaemonLog.fileName(mountpoint: "/fsx/llama3_70B/50%@x", host: "n1") == "fsx%2Fllama3_70B%2F50%25%40x@n1.log")
        #expect(DaemonLog.fileName(mountpoint: "/mnt/é", host: "h") == "mnt%2F%C3%A9@h.log")
        #expect(DaemonLog.fileName(mountpoint: "/m", host: "a b") == "m@a%20b.log")
    }

    @Test func longPathsStayWithinNameMax() {
        let deep = "/" + Array(repeating: "directory-\(String(repeating: "x", count: 40))", count: 12).joined(separator: "/")
        let other = deep.replacingOccurrences(of: "directory-", with: "directorY-")
        let name = DaemonLog.fileName(mountpoint: deep, host: "ip-10-1-2-3")
        #expect(name.utf8.count <= 255)
        #expect(name.hasSuffix("x@ip-10-1-2-3.log"))
        // Same last 60 bytes, different paths: the hash in front tells them apart.
        #expect(name != DaemonLog.fileName(mountpoint: other, host: "ip-10-1-2-3"))
    }

    /// The long-path hash (and torch.save's serialization ids) use 64-bit
    /// FNV-1a; these are the published test vectors.
    @Test func fnv1aMatchesPublishedVectors() {
        #expect(FNV1a.hash("".utf8) == 0xCBF2_9CE4_8422_2325)
        #expect(FNV1a.hash("a".utf8) == 0xAF63_DC4C_8601_EC8C)
        #expect(FNV1a.hash("foobar".utf8) == 0x8594_4171_F739_67E8)
    }

    @Test func directoryFollowsXDGThenHome() throws {
        #expect(try DaemonLog.defaultDirectory(euid: 0, environment: ["HOME": "/root", "XDG_STATE_HOME": "/x"], home: { nil })
                == "/var/log/shardfs")
        #expect(try DaemonLog.defaultDirectory(euid: 1000, environment: ["HOME": "/home/u", "XDG_STATE_HOME": "/st/"], home: { nil })
                == "/st/shardfs")
        #expect(try DaemonLog.defaultDirectory(euid: 1000, environment: ["HOME": "/fsx/ubuntu/"], home: { nil })
                == "/fsx/ubuntu/.local/state/shardfs")
        // A relative XDG_STATE_HOME is ignored, as the spec says.
        #expect(try DaemonLog.defaultDirectory(euid: 1000, environment: ["HOME": "/home/u", "XDG_STATE_HOME": "rel"], home: { nil })
                == "/home/u/.local/state/shardfs")
        #expect(try DaemonLog.defaultDirectory(euid: 1000, environment: [:], home: { "/home/pw" })
                == "/home/pw/.local/state/shardfs")
        #expect(throws: ShardFSError.self) { try DaemonLog.defaultDirectory(euid: 1000, environment: [:], home: { nil }) }
    }

    @Test func createsAPrivateDirectoryAndFileAndAppends() throws {
        let dir = try Dir()
        let logs = dir.path + "/state/shardfs"
        for line in ["one\n", "two\n"] {
            let fd = try DaemonLog.openDefault(directory: logs, name: "m@h.log")
            #expect(write(fd, line, line.utf8.count) == line.utf8.count)
            close(fd)
        }
        #expect(try String(contentsOfFile: logs + "/m@h.log", encoding: .utf8) == "one\ntwo\n")
        #expect(mode(logs) == 0o700)
        #expect(mode(dir.path + "/state") == 0o700)
        #expect(mode(logs + "/m@h.log") == 0o600)
    }

    @Test func neverFollowsASymlinkToTheFile() throws {
        let dir = try Dir()
        let logs = dir.path + "/logs"
        #expect(mkdir(logs, 0o700) == 0)
        try dir.write("victim", Array("precious".utf8))
        #expect(symlink(dir.path + "/victim", logs + "/m@h.log") == 0)
        let error = #expect(throws: ShardFSError.self) { _ = try DaemonLog.openDefault(directory: logs, name: "m@h.log") }
        #expect(error?.description.contains("\(logs)/m@h.log: is a symbolic link") == true)
        #expect(throws: ShardFSError.self) { _ = try DaemonLog.openNamed(logs + "/m@h.log") }
        #expect(try String(contentsOfFile: dir.path + "/victim", encoding: .utf8) == "precious")
    }

    @Test func refusesASymlinkedOrSharedDirectory() throws {
        let dir = try Dir()
        #expect(mkdir(dir.path + "/real", 0o700) == 0)
        #expect(symlink(dir.path + "/real", dir.path + "/link") == 0)
        let linked = #expect(throws: ShardFSError.self) { _ = try DaemonLog.openDefault(directory: dir.path + "/link", name: "m.log") }
        #expect(linked?.description.contains("symbolic link or not a directory") == true)
        #expect(mkdir(dir.path + "/shared", 0o777) == 0)
        #expect(chmod(dir.path + "/shared", 0o1777) == 0)
        let shared = #expect(throws: ShardFSError.self) { _ = try DaemonLog.openDefault(directory: dir.path + "/shared", name: "m.log") }
        #expect(shared?.description.contains("writable by other users (mode 1777)") == true)
        #expect(access(dir.path + "/real/m.log", F_OK) != 0)
        #expect(access(dir.path + "/shared/m.log", F_OK) != 0)
    }

    @Test func refusesWhatIsNotARegularFile() throws {
        let dir = try Dir()
        #expect(mkdir(dir.path + "/logs", 0o700) == 0)
        #expect(mkdir(dir.path + "/logs/m.log", 0o700) == 0)
        #expect(throws: ShardFSError.self) { _ = try DaemonLog.openDefault(directory: dir.path + "/logs", name: "m.log") }
    }

    private func mode(_ path: String) -> mode_t {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o7777 : 0
    }

    /// A user with no usable home (a service account, a home not mounted
    /// yet): the log goes to a private directory that can be made, and the
    /// mount goes on.
    @Test func aLogDirectoryOutOfReachFallsBackToAPrivateOne() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        // XDG_RUNTIME_DIR usable: the log goes there.
        let (path, fd) = try DaemonLog.openFallback(name: "m@h.log", euid: geteuid(), environment: ["XDG_RUNTIME_DIR": dir.path])
        close(fd)
        #expect(path == dir.path + "/shardfs/m@h.log")
        var info = stat()
        #expect(stat(dir.path + "/shardfs", &info) == 0 && info.st_mode & 0o777 == 0o700)
        // XDG_RUNTIME_DIR a file, not a directory: the next candidate, private too.
        try dir.write("file", [1])
        let (other, otherFD) = try DaemonLog.openFallback(name: "m-\(UUID().uuidString)@h.log", euid: geteuid(),
                                                          environment: ["XDG_RUNTIME_DIR": dir.path + "/file"])
        close(otherFD)
        #expect(other.hasPrefix("/tmp/shardfs-\(geteuid())"))
        let parent = String(other[..<other.lastIndex(of: "/")!])
        #expect(stat(parent, &info) == 0 && info.st_uid == geteuid() && info.st_mode & 0o077 == 0)
        unlink(other)
    }

    /// The usual log: opened where it can be; out of reach (the mount falls
    /// back, and says why) when no home is known or the directory cannot be
    /// made; refused when the directory exists but is unsafe. Told apart by
    /// where the error arose, never by its words.
    @Test func theUsualLogIsOpenedOutOfReachOrRefused() throws {
        let dir = try Dir()
        guard case let .opened(path, fd) = try DaemonLog.openUsual(name: "m@h.log", euid: 1000,
                                                                   environment: ["XDG_STATE_HOME": dir.path + "/state"], home: { nil })
        else { Issue.record("not opened"); return }
        close(fd)
        #expect(path == dir.path + "/state/shardfs/m@h.log")

        guard case let .outOfReach(noHome) = try DaemonLog.openUsual(name: "m@h.log", euid: 1000, environment: [:], home: { nil })
        else { Issue.record("no home, yet not out of reach"); return }
        #expect(noHome.description.contains("no home directory is known"))

        try dir.write("file", [1])
        guard case let .outOfReach(unmakeable) = try DaemonLog.openUsual(name: "m@h.log", euid: 1000,
                                                                         environment: ["XDG_STATE_HOME": dir.path + "/file"], home: { nil })
        else { Issue.record("a directory under a file, yet not out of reach"); return }
        #expect(unmakeable == .io(path: dir.path + "/file/shardfs", operation: "make the daemon's log directory", errno: ENOTDIR))

        #expect(mkdir(dir.path + "/shared", 0o777) == 0)
        #expect(mkdir(dir.path + "/shared/shardfs", 0o777) == 0)
        #expect(chmod(dir.path + "/shared/shardfs", 0o777) == 0)
        let refused = #expect(throws: ShardFSError.self) {
            _ = try DaemonLog.openUsual(name: "m@h.log", euid: 1000, environment: ["XDG_STATE_HOME": dir.path + "/shared"], home: { nil })
        }
        #expect(refused?.description.contains("writable by other users") == true)
    }
}
