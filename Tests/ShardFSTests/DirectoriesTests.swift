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
}
