import ArgumentParser
import Foundation
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the rank files in TAG/model/ against a layout of SRC: keys and their order, dtypes, shapes, every element, CRC-32s.",
        discussion: """
            For every rank file the layout names, streams both sides and compares
            what a loader would see, bit for bit: the file in TAG (plain or
            --format xser; written by NxD's converter, a script, `shardfs convert`
            or a --persist-to daemon) against the layout cut from SRC. Reads each
            byte of TAG once, in bounded memory, --jobs files at a time. Prints
            `ok` or what is wrong per file (the first differing key, its element
            and both values; which KV heads the K/V rows hold when they are
            grouped wrongly), then a summary. Exit status 0 only when every file
            is right, 1 otherwise.

            Reported, while the rest is still checked: missing, extra (in
            TAG/model but not named by the layout), truncated or unreadable files;
            missing, extra or reordered keys; wrong dtypes, shapes and values; zip
            CRC-32 fields that disagree with their data (0 means none was
            recorded, as in served files: skipped); for xser, missing tensor files,
            stray ones, and .info.pt entries that disagree with them. A `done`
            file or a .shardfs/ manifest in TAG is neither needed nor trusted.

              shardfs verify /fsx/ubuntu/Meta-Llama-3-70B \\
                  /fsx/ubuntu/llama3_70B/pretrained_weight --tp-size 32 --pp-size 8 \\
                  --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32

            Split over a Slurm array (files the layout does not name are
            reported by part 0):

              shardfs verify ... --part $SLURM_ARRAY_TASK_ID/16

            With --format dcp, TAG is a DCP folder (a TorchTitan checkpoint, ShardFS's
            or TorchTitan's own): its .metadata entries (kinds, dtypes, sizes), every
            bytes item's value and every tensor element, per TorchTitan parameter.
            The other way round, a DCP folder is a SRC like any other:

              shardfs verify $TAG /fsx/ubuntu/titan/checkpoint/step-1000 \\
                  --config $MODEL --format dcp
              shardfs verify /fsx/ubuntu/titan/checkpoint/step-1000 $TAG \\
                  --config $MODEL --tp-size 32 --pp-size 8 --kv-size-multiplier 4 \\
                  --qkv-linear --fuse-qkv --dp-size 4
            """
    )

    @Argument(help: "The source: a Hugging Face model directory, or an NxD checkpoint tag (give --config).")
    var source: String

    @Argument(help: "The checkpoint tag directory to check (it holds model/).")
    var tag: String

    @OptionGroup(title: "Source")
    var sourceFlags: SourceFlags

    @OptionGroup(title: "Layout (the one TAG should hold)")
    var layout: LayoutFlags

    @Option(help: "Files checked at once, 1 to 64 (default: the number of cores).")
    var jobs: Int = min(WorkerPool.cores, WorkerPool.maximumWorkers)

    @Option(help: ArgumentHelp("Check only share I (0-based) of N even shares of the files, e.g. 3/16.", valueName: "I/N"),
            transform: parsePart)
    var part: Part = .whole

    @Flag(help: "Print the report as one JSON document.")
    var json = false

    /// Bytes compared per read on each side, in KiB (for benchmarks).
    @Option(name: .customLong("chunk-kib"), help: .hidden)
    var chunkKiB: Int = Verifier.defaultChunkBytes >> 10

    func validate() throws {
        try validateJobs(jobs, flag: "--jobs")
        guard (4...65536).contains(chunkKiB) else { throw ValidationError("--chunk-kib must be between 4 and 65536, not \(chunkKiB)") }
    }

    func run() throws {
        let (checkpoint, plan, verifier) = try reportingErrors { () throws(ShardFSError) in
            if layout.format == .hf {
                throw ShardFSError.badLayout(flag: "--format hf", reason: "verify checks NxD rank files (pt or xser) or a DCP folder (dcp), not a Hugging Face checkpoint")
            }
            if layout.format == .dcp && part != .whole {
                throw ShardFSError.badLayout(flag: "--part", reason: "a DCP folder is checked whole")
            }
            let (checkpoint, plan) = try openAndPlan(source, sourceFlags, layout)
            let check: VerifyCheck = layout.format == .dcp
                ? .dcp(try DCPFolderCheck(checkpoint: checkpoint, plan: plan, folder: tag, configPath: sourceFlags.config ?? source))
                : .rankFiles(try Verifier(checkpoint: checkpoint, plan: plan, tag: tag))
            return (checkpoint, plan, check)
        }
        _ = checkpoint
        let display = VerifyDisplay(printLines: !json)
        let options = Verifier.Options(jobs: jobs, part: part, chunkBytes: chunkKiB << 10, configPath: sourceFlags.config ?? source)
        let report: VerifyReport
        switch verifier {
        case .rankFiles(let verifier): report = verifier.run(options: options, events: display.handle)
        case .dcp(let check): report = check.run(jobs: jobs, chunkBytes: options.chunkBytes, events: display.handle)
        }
        display.finish()
        if json {
            let document = VerifyJSON(report: report, source: source, tag: tag, plan: plan, part: part)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes, .sortedKeys]
            Console.out(String(decoding: try encoder.encode(document), as: UTF8.self))
        } else {
            for verdict in report.files where verdict.status == .extra { Console.out(VerifyText.lines(verdict)) }
            for hint in report.hints { Console.out("hint: \(hint)") }
            Console.out(VerifyText.summary(report, elapsed: display.elapsed))
        }
        if !report.isOK { throw ExitCode.failure }
    }
}

/// What verify checks: NxD rank files, or a DCP folder.
enum VerifyCheck {
    case rankFiles(Verifier)
    case dcp(DCPFolderCheck)
}

/// The report as people read it.
enum VerifyText {
    /// Problems printed per file; --json lists all.
    static let problemsShown = 10

    static func lines(_ verdict: FileVerdict) -> String {
        let label = verdict.status == .ok ? "ok" : verdict.status.rawValue.uppercased()
        var head = label.padding(toLength: 11, withPad: " ", startingAt: 0) + verdict.path
        var problems = verdict.problems
        // A missing or extra file, or an unreadable one, says it in one line.
        if verdict.status != .wrong, problems.count == 1, problems[0].file == verdict.path {
            if verdict.status != .missing { head += ": " + problems[0].message }
            problems = []
        }
        var lines = [head]
        for problem in problems.prefix(problemsShown) {
            lines.append("    " + (problem.file == verdict.path ? "" : problem.file + ": ") + problem.message)
        }
        if problems.count > problemsShown {
            lines.append("    ... and \(problems.count - problemsShown) more (--json lists all)")
        }
        return lines.joined(separator: "\n")
    }

    static func summary(_ report: VerifyReport, elapsed: Double) -> String {
        let rankFiles = report.files.filter { $0.status != .extra }
        var parts = ["\(report.count(.ok)) of \(rankFiles.count) files ok"]
        for status in [FileVerdict.Status.wrong, .missing, .unreadable] where report.count(status) > 0 {
            parts.append("\(report.count(status)) \(status.rawValue)")
        }
        if report.count(.extra) > 0 { parts.append("\(report.count(.extra)) extra") }
        let rate = elapsed > 0 ? " (\(Units.rate(bytesPerSecond: Double(report.bytes) / elapsed)))" : ""
        return (report.isOK ? "verify: OK: " : "verify: FAILED: ") + parts.joined(separator: ", ")
            + "; \(Units.bytes(report.bytes)) of tensors in \(Units.duration(elapsed))\(rate)"
    }
}

/// `verify --json`: the report as one document.
struct VerifyJSON: Encodable {
    struct Summary: Encodable {
        let files, ok, wrong, missing, unreadable, extra, bytes: Int
    }
    struct Difference: Encodable {
        let index: Int
        let position: [Int]
        let expected, expectedBits, found, foundBits: String
    }
    struct KVHeads: Encodable {
        let projection: String
        let row, wanted: Int
        let found: Int?
    }
    struct Problem: Encodable {
        let kind, file, message: String
        let key: String?
        let difference: Difference?
        let kvHeads: [KVHeads]?
    }
    struct File: Encodable {
        let path, status: String
        let problems: [Problem]
    }

    let ok: Bool
    let source, tag, layout, format, part: String
    let summary: Summary
    let hints: [String]
    let files: [File]

    init(report: VerifyReport, source: String, tag: String, plan: LayoutPlan, part: Part) {
        ok = report.isOK
        self.source = source
        self.tag = tag
        var options = plan.options
        options.dtype = plan.dtype
        layout = options.summary
        format = plan.options.format.rawValue
        self.part = part.description
        summary = Summary(files: report.files.filter { $0.status != .extra }.count, ok: report.count(.ok), wrong: report.count(.wrong),
                          missing: report.count(.missing), unreadable: report.count(.unreadable), extra: report.count(.extra),
                          bytes: report.bytes)
        hints = report.hints
        files = report.files.map { verdict in
            File(path: verdict.path, status: verdict.status.rawValue, problems: verdict.problems.map { p in
                Problem(kind: p.kind.rawValue, file: p.file, message: p.message, key: p.key,
                        difference: p.difference.map {
                            Difference(index: $0.index, position: $0.position, expected: $0.expected.decimal, expectedBits: $0.expected.hex,
                                       found: $0.found.decimal, foundBits: $0.found.hex)
                        },
                        kvHeads: p.kvHeads.isEmpty ? nil : p.kvHeads.map { KVHeads(projection: $0.projection, row: $0.row, wanted: $0.wanted, found: $0.found) })
            })
        }
    }
}

/// A check's progress: on a terminal a bar redrawn in place on stderr (as
/// `convert`'s), and each file's verdict on stdout as soon as it and every
/// file before it are done, so the lines come in plan order.
final class VerifyDisplay: Sendable {
    struct State {
        var totalFiles = 0, totalBytes = 0
        var files = 0, bytes = 0
        var lastDraw = 0.0
        var verdicts: [Int: FileVerdict] = [:]
        var nextToPrint = 0
    }

    let interactive: Bool
    let printLines: Bool
    let start = Monotonic.seconds
    let state = Locked(State())

    init(printLines: Bool, interactive: Bool = Console.stderrIsTerminal) {
        self.printLines = printLines
        self.interactive = interactive
    }

    var elapsed: Double { Monotonic.seconds - start }

    func handle(_ event: VerifyEvent) {
        state.withLock { s in
            let elapsed = Monotonic.seconds - start
            switch event {
            case let .started(files, bytes):
                s.totalFiles = files
                s.totalBytes = bytes
                Console.error("checking \(files) files, \(Units.bytes(bytes)) of tensors")
            case let .checked(bytes):
                s.bytes += bytes
                guard interactive, elapsed - s.lastDraw >= 0.1 else { return }
                s.lastDraw = elapsed
                Console.write("\r\u{1B}[K" + bar(s, elapsed: elapsed), fd: 2)
            case let .finished(index, verdict):
                s.files += 1
                s.verdicts[index] = verdict
                guard printLines else { return }
                var text = ""
                while let next = s.verdicts.removeValue(forKey: s.nextToPrint) {
                    text += VerifyText.lines(next) + "\n"
                    s.nextToPrint += 1
                }
                guard !text.isEmpty else { return }
                if interactive { Console.write("\r\u{1B}[K", fd: 2) }
                Console.write(text, fd: 1)
                if interactive { Console.write(bar(s, elapsed: elapsed), fd: 2) }
            }
        }
    }

    /// Ends the bar's line.
    func finish() {
        if interactive { Console.write("\r\u{1B}[K", fd: 2) }
    }

    private func bar(_ s: State, elapsed: Double) -> String {
        ProgressDisplay.bar(files: s.files, totalFiles: s.totalFiles, bytes: s.bytes, totalBytes: s.totalBytes, elapsed: elapsed)
    }
}
