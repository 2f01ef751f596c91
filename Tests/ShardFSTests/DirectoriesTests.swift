import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The one way directories are made: `mkdir -p` returning what it made, and
/// an error naming the directory and the real errno (never a Foundation code
/// passed to strerror, which read "Unknown error 513").
@Suite struct DirectoriesTests {
    @Test func makesWhatIsMissingParentsFirst() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let made = try Directories.make(dir.path + "/a/b/c")
        #expect(made == [dir.path + "/a", dir.path + "/a/b", dir.path + "/a/b/c"])
        #expect(try Directories.make(dir.path + "/a/b/c") == [])
        var info = stat()
        let secret = try Directories.make(dir.path + "/s", mode: 0o700)
        #expect(secret == [dir.path + "/s"])
        #expect(stat(dir.path + "/s", &info) == 0 && info.st_mode & 0o777 == 0o700)
    }

    @Test func aFileInTheWayIsNamedWithTheRealCause() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        try dir.write("f", [1])
        let error = #expect(throws: ShardFSError.self) { try Directories.make(dir.path + "/f/out") }
        #expect(error == .io(path: dir.path + "/f", operation: "mkdir", errno: ENOTDIR))
        #expect(error?.description == "\(dir.path)/f: mkdir failed: Not a directory (errno \(ENOTDIR))")
    }

    @Test func aRefusalCarriesItsErrno() {
        // /proc refuses new entries: whatever errno it says must reach the user.
        let error = #expect(throws: ShardFSError.self) { try Directories.make("/proc/shardfs-test/out") }
        guard case let .io(path, _, code)? = error else { return }
        #expect(path == "/proc/shardfs-test")
        #expect(!(error?.description.contains("Unknown error") ?? true), "\(String(describing: error))")
        #expect(code != 0)
    }

    /// What convert and the materialiser make is made durable: each
    /// directory made is fsynced into its parent, parents first; nothing is
    /// synced when nothing was made.
    @Test func aDurableDirectoryIsSyncedIntoItsParent() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let synced = Locked([String]())
        let record: (String) throws(ShardFSError) -> Void = { path in
            try Directories.sync(path)
            synced.withLock { $0.append(path) }
        }
        let made = try Directories.makeDurable(dir.path + "/out/model/x.tensors", sync: record)
        #expect(made == [dir.path + "/out", dir.path + "/out/model", dir.path + "/out/model/x.tensors"])
        #expect(synced.withLock { $0 } == [dir.path, dir.path + "/out", dir.path + "/out/model"])
        synced.withLock { $0 = [] }
        #expect(try Directories.makeDurable(dir.path + "/out/model", sync: record) == [])
        #expect(synced.withLock { $0 }.isEmpty)
        #expect(Directories.parent(of: "/a") == "/" && Directories.parent(of: "a") == "." && Directories.parent(of: "./a/b") == "./a")
    }

    /// Convert and the materialiser make their directories through the
    /// target directory: `top` and every parent a file needs, returning
    /// those made below `top` (a failed convert removes them).
    @Test func aTargetMakesTheDirectoriesItsFilesNeed() throws {
        let dir = try ExtentReadTests.TemporaryDirectory()
        let target = TargetDirectory(directory: dir.path + "/out", naming: .out(dir.path + "/out"))
        let made = try target.makeDirectories(for: ["model/a.pt", "model/a.tensors/tensor_0.pt", "model/b.pt"], top: "model")
        #expect(made == [dir.path + "/out/model/a.tensors"])
        var info = stat()
        #expect(stat(dir.path + "/out/model", &info) == 0 && info.st_mode & S_IFMT == S_IFDIR)
        #expect(try target.makeDirectories(for: ["x.safetensors"], top: "") == [])
    }
}
