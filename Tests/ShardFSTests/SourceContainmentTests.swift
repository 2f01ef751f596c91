import Foundation
import Testing
@testable import ShardFS

/// A checkpoint reads only files inside its model directory: index names with
/// `/` or `..` and symlinks that resolve outside SRC are refused by name.
@Suite struct SourceContainmentTests {
    static let config = """
        {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 1, "hidden_size": 8,
         "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 32}
        """
    /// A valid safetensors file with no tensors: the 8-byte length 2, then `{}`.
    static let emptySafetensors: [UInt8] = [2, 0, 0, 0, 0, 0, 0, 0] + Array("{}".utf8)

    /// A scratch folder holding `src/` (the model directory) and `outside/`.
    final class Scratch {
        let root: String
        var src: String { root + "/src" }
        var outside: String { root + "/outside" }
        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("shardfs-containment-\(UUID().uuidString)").path
            for dir in [src, outside] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        }
        func write(_ path: String, _ contents: [UInt8]) throws {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(contents).write(to: URL(fileURLWithPath: path))
        }
        func link(_ path: String, to target: String) throws {
            try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: target)
        }
        deinit { try? FileManager.default.removeItem(atPath: root) }
    }

    static func index(_ shard: String) -> [UInt8] {
        // NUL escaped scalar by scalar: as a Character it may carry a combining mark.
        let escaped = shard.unicodeScalars.map { $0 == "\u{0}" ? "\\u0000" : String($0) }.joined()
        return Array("{\"metadata\": {}, \"weight_map\": {\"model.norm.weight\": \"\(escaped)\"}}".utf8)
    }

    // A separator or NUL followed by a combining mark (U+0301) is one Character
    // with it, which Character-based checks miss; the kernel sees the byte.
    @Test(arguments: ["../outside.safetensors", "/etc/passwd", "..", ".", "", "sub/model.safetensors", "a\u{0}b",
                      "..\u{2F}\u{301}outside.safetensors", "nul\u{0}\u{486}.safetensors"])
    func indexNameLeavingSRC(_ name: String) {
        let error = expectRefusal(mentioning: ["model.norm.weight", "plain file names"]) { () throws(ShardFSError) in
            try Checkpoint.parseIndex(Self.index(name))
        }
        if case .badSource(let file, let reason)? = error {
            #expect(file == Checkpoint.indexName)
            #expect(reason.contains("\"\(name)\""))
        }
    }

    @Test func shardSymlinkOutsideSRC() throws {
        let s = try Scratch()
        try s.write(s.src + "/config.json", Array(Self.config.utf8))
        try s.write(s.outside + "/secret.safetensors", Self.emptySafetensors)
        try s.link(s.src + "/model-00001-of-00001.safetensors", to: s.outside + "/secret.safetensors")
        try s.write(s.src + "/" + Checkpoint.indexName, Self.index("model-00001-of-00001.safetensors"))
        let error = expectRefusal(mentioning: ["model-00001-of-00001.safetensors", "outside the model directory"]) { () throws(ShardFSError) in
            try Checkpoint(directory: s.src)
        }
        if case .badSource(let file, _)? = error { #expect(file == "model-00001-of-00001.safetensors") }
    }

    /// A relative link climbing out with `..` is the same escape.
    @Test func singleFileRelativeSymlinkOutsideSRC() throws {
        let s = try Scratch()
        try s.write(s.src + "/config.json", Array(Self.config.utf8))
        try s.write(s.outside + "/model.safetensors", Self.emptySafetensors)
        try s.link(s.src + "/model.safetensors", to: "../outside/model.safetensors")
        expectRefusal(mentioning: ["model.safetensors", "outside the model directory"]) { () throws(ShardFSError) in
            try Checkpoint(directory: s.src)
        }
    }

    @Test func configSymlinkOutsideSRC() throws {
        let s = try Scratch()
        try s.write(s.outside + "/config.json", Array(Self.config.utf8))
        try s.link(s.src + "/config.json", to: s.outside + "/config.json")
        try s.write(s.src + "/model.safetensors", Self.emptySafetensors)
        expectRefusal(mentioning: ["config.json", "outside the model directory"]) { () throws(ShardFSError) in
            try Checkpoint(directory: s.src)
        }
    }

    /// Links that stay inside SRC, and SRC itself reached through a link, are fine.
    @Test func symlinksInsideSRC() throws {
        let s = try Scratch()
        try s.write(s.src + "/config.json", Array(Self.config.utf8))
        try s.write(s.src + "/blobs/abc", Self.emptySafetensors)
        try s.link(s.src + "/model.safetensors", to: "blobs/abc")
        try s.link(s.root + "/via-link", to: s.src)
        let checkpoint = try Checkpoint(directory: s.root + "/via-link")
        #expect(checkpoint.files.map(\.name) == ["model.safetensors"])
    }

    /// The Hugging Face hub cache: snapshots/<rev>/<file> links to ../../blobs/<hash>.
    @Test func huggingFaceCacheLayout() throws {
        let s = try Scratch()
        let repo = s.root + "/models--org--tiny", snapshot = repo + "/snapshots/0123abcd"
        try s.write(repo + "/blobs/c0ffee", Array(Self.config.utf8))
        try s.write(repo + "/blobs/beef", Self.emptySafetensors)
        try FileManager.default.createDirectory(atPath: snapshot, withIntermediateDirectories: true)
        try s.link(snapshot + "/config.json", to: "../../blobs/c0ffee")
        try s.link(snapshot + "/model.safetensors", to: "../../blobs/beef")
        let checkpoint = try Checkpoint(directory: snapshot)
        #expect(checkpoint.files.map(\.name) == ["model.safetensors"])
        // ...but not a blob of another cache repo.
        try s.write(s.root + "/models--other/blobs/beef", Self.emptySafetensors)
        try FileManager.default.removeItem(atPath: snapshot + "/model.safetensors")
        try s.link(snapshot + "/model.safetensors", to: s.root + "/models--other/blobs/beef")
        expectRefusal(mentioning: ["model.safetensors", "outside the model directory"]) { () throws(ShardFSError) in
            try Checkpoint(directory: snapshot)
        }
    }
}
