import Foundation

/// The files of a training tag that do not depend on its layout, carried to
/// another layout as they are: `scheduler.pt` (the LR scheduler's
/// state_dict), `user_content.pt` (the script's own: epoch, step), and the
/// `checkpoint` and `done` markers NxD's `save_checkpoint` writes (a tag is
/// complete once `done` exists). Read whole: they are small.
enum CarriedFiles {
    static let names = ["checkpoint", "scheduler.pt", "user_content.pt", "done"]
    /// The largest carried file ShardFS reads into memory.
    static let limit = 64 << 20

    /// The carried files present, and notes on the tag's other entries (not carried).
    static func read(tag: String) throws(ShardFSError) -> (files: [(path: String, bytes: [UInt8])], notes: [String]) {
        let entries = try Directories.list(tag)
        var files: [(path: String, bytes: [UInt8])] = []
        var notes: [String] = []
        var containment = try SourceContainment(directory: tag)
        for name in names where entries.contains(name) {
            let file = try NxDRankFiles.openFile(tag: tag, path: name, containment: &containment)
            guard file.size <= limit else {
                throw ShardFSError.badSource(file: name, reason: "is \(file.size) bytes; ShardFS carries files of up to \(limit) bytes (--weights-only leaves it out)")
            }
            files.append((name, try file.readBytes(at: 0, count: file.size)))
        }
        for entry in entries where !names.contains(entry) && !["model", "optim", "config.json"].contains(entry) {
            notes.append("\(entry) in the tag is not carried: ShardFS carries scheduler.pt, user_content.pt and the checkpoint and done markers")
        }
        return (files, notes)
    }
}
