import Foundation
import Synchronization

/// What a conversion reports as it goes, for a progress display.
public enum ConvertEvent: Sendable {
    case started(files: Int, bytes: Int)
    case wrote(bytes: Int)
    case finished(path: String, bytes: Int)
}

/// `shardfs convert`: writes the rank files of a plan to a directory, `jobs`
/// files at a time, each through `VirtualFileWriter` (so each is complete
/// under its final name or absent).
public struct Converter: Sendable {
    public let checkpoint: Checkpoint
    public let plan: LayoutPlan

    public init(checkpoint: Checkpoint, plan: LayoutPlan) {
        self.checkpoint = checkpoint
        self.plan = plan
    }

    /// Writes `files` (all of the plan's by default) under `root`, creating
    /// `root/model`. Stops at the first error, removing unfinished temporaries.
    public func run(root: String, files: [RankFile]? = nil, jobs: Int,
                    isCancelled: @escaping @Sendable () -> Bool = { false },
                    events: @escaping @Sendable (ConvertEvent) -> Void = { _ in }) throws(ShardFSError) {
        let files = files ?? plan.files
        let virtualFiles = plan.virtualFiles(files).map(\.file)
        let modelDirectory = root + "/model"
        do {
            try FileManager.default.createDirectory(atPath: modelDirectory, withIntermediateDirectories: true)
        } catch {
            throw ShardFSError.io(path: modelDirectory, operation: "mkdir", errno: (error as NSError).code == 0 ? EIO : Int32((error as NSError).code))
        }
        events(.started(files: files.count, bytes: virtualFiles.reduce(0) { $0 + $1.size }))

        struct Shared {
            var next = 0
            var failure: ShardFSError?
        }
        let shared = Mutex(Shared())
        let group = DispatchGroup()
        let sources = checkpoint.files
        for _ in 0..<max(1, min(jobs, files.count)) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                let writer = VirtualFileWriter(reader: ExtentReader(sources: sources))
                defer { writer.close() }
                while true {
                    let index: Int? = shared.withLock { state in
                        guard state.failure == nil, state.next < files.count else { return nil }
                        defer { state.next += 1 }
                        return state.next
                    }
                    guard let index else { return }
                    let path = root + "/" + files[index].path
                    do throws(ShardFSError) {
                        try writer.write(virtualFiles[index], to: path,
                                         progress: { events(.wrote(bytes: $0)) },
                                         isCancelled: { isCancelled() || shared.withLock { $0.failure != nil } })
                        events(.finished(path: files[index].path, bytes: virtualFiles[index].size))
                    } catch {
                        shared.withLock { state in if state.failure == nil { state.failure = error } }
                        return
                    }
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        if let failure = shared.withLock({ $0.failure }) { throw failure }
    }
}
