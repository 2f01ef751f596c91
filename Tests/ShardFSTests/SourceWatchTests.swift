import Foundation
import Testing
@testable import ShardFS

#if canImport(Glibc)
import Glibc
#endif

/// The mount's source watcher at the counts of a trained tag: inotify on
/// the sources' directories reports a change as it happens (here one that
/// no stat could see), the sweep covers what inotify cannot, and an idle
/// tick costs one watch per directory, not a stat per file.
@Suite struct SourceWatchTests {
    typealias Dir = ExtentReadTests.TemporaryDirectory

    /// `perDirectory` files of 16 bytes in each of `directories` folders.
    static func sources(_ dir: Dir, directories: Int, perDirectory: Int) throws -> [SourceFile] {
        var files: [SourceFile] = []
        for d in 0..<directories {
            try FileManager.default.createDirectory(atPath: dir.path + "/d\(d)", withIntermediateDirectories: false)
            for f in 0..<perDirectory {
                try dir.write("d\(d)/t\(f)", [UInt8](repeating: 1, count: 16))
                files.append(try SourceFile(directory: dir.path, name: "d\(d)/t\(f)"))
            }
        }
        return files
    }

    @Test func aWriteNoStatCanSeeIsReportedByInotify() throws {
        let dir = try Dir()
        let sources = try Self.sources(dir, directories: 3, perDirectory: 1000)
        let watch = SourceWatch(sources: sources, sweepInterval: 3600)  // no sweep during the test
        watch.tick(milliseconds: 0)  // starts watching
        #expect(watch.watchedDirectories == (3, 0))
        // Same size, and the mtime put back: the write event tells (and a
        // stat by the ctime, which cannot be put back).
        let path = dir.path + "/d2/t500"
        var before = stat()
        #expect(stat(path, &before) == 0)
        let fd = open(path, O_WRONLY)
        #expect(pwrite(fd, [UInt8(2)], 1, 3) == 1)
        close(fd)
        var times = [before.st_atim, before.st_mtim]
        #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
        #expect(sources[2500].pathChange()?.hasPrefix("changed (ctime moved") == true)
        watch.tick(milliseconds: 1000)
        #expect(watch.takeNewlyBroken() == [2500])
        #expect(watch.problem(2500) == "written to")
    }

    /// Two sources that are one entry (a file named twice, or through a link
    /// of the Hugging Face cache) are both reported when it changes.
    @Test func sourcesSharingAnEntryAreAllReported() throws {
        let dir = try Dir()
        var sources = try Self.sources(dir, directories: 2, perDirectory: 3)
        sources.append(try SourceFile(directory: dir.path, name: "d1/t1"))
        #expect(symlink(dir.path + "/d0/t2", dir.path + "/link") == 0)
        sources.append(try SourceFile(directory: dir.path, name: "link"))
        let watch = SourceWatch(sources: sources, sweepInterval: 3600)
        watch.tick(milliseconds: 0)
        for path in ["/d1/t1", "/d0/t2"] {
            let fd = open(dir.path + path, O_WRONLY)
            #expect(pwrite(fd, [UInt8(2)], 1, 3) == 1)
            close(fd)
        }
        watch.tick(milliseconds: 1000)
        #expect(watch.takeNewlyBroken() == [2, 4, 6, 7])
    }

    @Test func renamesAndRemovalsAreReported() throws {
        let dir = try Dir()
        let sources = try Self.sources(dir, directories: 2, perDirectory: 50)
        let watch = SourceWatch(sources: sources, sweepInterval: 3600)
        watch.tick(milliseconds: 0)
        try dir.write("d0/new", [UInt8](repeating: 1, count: 16))
        #expect(rename(dir.path + "/d0/new", dir.path + "/d0/t7") == 0)
        #expect(unlink(dir.path + "/d1/t3") == 0)
        watch.tick(milliseconds: 1000)
        watch.tick(milliseconds: 100)
        #expect(watch.takeNewlyBroken() == [7, 53])
        #expect(watch.problem(7)?.hasPrefix("replaced by another file") == true)
        #expect(watch.problem(53) == "deleted")
        #expect(watch.problem(8) == nil)
    }

    @Test func theSweepFindsWhatInotifyDoesNotReport() throws {
        let dir = try Dir()
        let sources = try Self.sources(dir, directories: 1, perDirectory: 450)
        // No inotify: as for a change made by another node of a network file system.
        let watch = SourceWatch(sources: sources, sweepInterval: 0, events: false)
        try dir.write("d0/t449", [UInt8](repeating: 1, count: 17))
        // 450 files, at least 200 a tick: the third tick reaches file 449.
        watch.tick(milliseconds: 0)
        watch.tick(milliseconds: 0)
        #expect(watch.takeNewlyBroken() == [])
        watch.tick(milliseconds: 0)
        #expect(watch.takeNewlyBroken() == [449])
        #expect(watch.problem(449) == "size changed from 16 to 17 bytes")
    }

    @Test func aReadChecksTheSourcesItCopiedFrom() throws {
        let dir = try Dir()
        let sources = try Self.sources(dir, directories: 1, perDirectory: 3)
        let watch = SourceWatch(sources: sources, sweepInterval: 3600, events: false)
        #expect(watch.check(1) == nil)
        let fd = open(dir.path + "/d0/t1", O_WRONLY | O_APPEND)
        #expect(write(fd, [UInt8(0)], 1) == 1)
        close(fd)
        #expect(watch.check(1) == "size changed from 16 to 17 bytes")
        #expect(watch.anyBroken)
        #expect(watch.check(0) == nil)
    }

    @Test func wakeEndsAWait() {
        let watch = SourceWatch(sources: [])
        watch.wake()
        let start = Date()
        watch.tick(milliseconds: 10_000)
        #expect(Date().timeIntervalSince(start) < 5)
    }
}
