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

    /// Writes the files of the rank files `files` (all of the plan's by
    /// default; in the plan's format) under `root`, creating the directories
    /// they need. Stops at the first error, removing unfinished temporaries.
    public func run(root: String, files: [RankFile]? = nil, jobs: Int,
                    isCancelled: @escaping @Sendable () -> Bool = { false },
                    events: @escaping @Sendable (ConvertEvent) -> Void = { _ in }) throws(ShardFSError) {
        let outputs = plan.virtualFiles(files)
        let created = try Converter.makeDirectories(for: outputs.map(\.path), under: root, top: plan.options.format == .hf ? root : root + "/model")
        events(.started(files: outputs.count, bytes: outputs.reduce(0) { $0 + $1.file.size }))
        do throws(ShardFSError) {
            try write(outputs, root: root, jobs: jobs, isCancelled: isCancelled, events: events)
        } catch {
            // Leave no empty `p.tensors` folder behind: the trainer takes a tag
            // holding one for xser.
            for directory in created.reversed() { rmdir(directory) }
            throw error
        }
    }

    /// Creates `top` (`root/model`, or `root` for a Hugging Face checkpoint) and every other directory the paths need (an
    /// xser `p.tensors/`), each made durable in its parent. Returns the
    /// directories below `root/model` that did not exist, parents first.
    static func makeDirectories(for paths: [String], under root: String, top: String) throws(ShardFSError) -> [String] {
        var directories = [top]
        var seen = Set(directories)
        for path in paths {
            guard let slash = path.lastIndex(of: "/") else { continue }
            let directory = root + "/" + path[..<slash]
            if seen.insert(directory).inserted { directories.append(directory) }
        }
        var created: [String] = []
        for (index, directory) in directories.enumerated() {
            let existed = FileManager.default.fileExists(atPath: directory)
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw ShardFSError.io(path: directory, operation: "mkdir", errno: (error as NSError).code == 0 ? EIO : Int32((error as NSError).code))
            }
            if !existed && index > 0 {
                created.append(directory)
                try VirtualFileWriter.syncDirectory(of: directory)
            }
        }
        return created
    }

    /// Writes `outputs` under `root`, `jobs` files at a time.
    private func write(_ outputs: [(path: String, file: VirtualFile)], root: String, jobs: Int,
                       isCancelled: @escaping @Sendable () -> Bool,
                       events: @escaping @Sendable (ConvertEvent) -> Void) throws(ShardFSError) {
        struct Shared {
            var next = 0
            var failure: ShardFSError?
        }
        let shared = Mutex(Shared())
        let group = DispatchGroup()
        let sources = checkpoint.files
        for _ in 0..<max(1, min(jobs, outputs.count)) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                let writer = VirtualFileWriter(reader: ExtentReader(sources: sources))
                defer { writer.close() }
                while true {
                    let index: Int? = shared.withLock { state in
                        guard state.failure == nil, state.next < outputs.count else { return nil }
                        defer { state.next += 1 }
                        return state.next
                    }
                    guard let index else { return }
                    let (path, file) = outputs[index]
                    do throws(ShardFSError) {
                        try writer.write(file, to: root + "/" + path, fileCRC: false,
                                         progress: { events(.wrote(bytes: $0)) },
                                         isCancelled: { isCancelled() || shared.withLock { $0.failure != nil } })
                        events(.finished(path: path, bytes: file.size))
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
