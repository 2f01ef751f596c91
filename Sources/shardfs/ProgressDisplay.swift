import ShardFS

/// Shows a conversion's progress: a bar redrawn in place on a terminal
/// (files, bytes, rate, ETA), one line per finished file otherwise (logs).
final class ProgressDisplay: Sendable {
    struct State {
        var totalFiles = 0, totalBytes = 0
        var files = 0, bytes = 0
        var keptFiles = 0, keptBytes = 0
        var lastDraw = 0.0
    }

    let interactive: Bool
    let start = Monotonic.seconds
    let state = Locked(State())

    init(interactive: Bool = Console.stderrIsTerminal) {
        self.interactive = interactive
    }

    func handle(_ event: ConvertEvent) {
        let line: String? = state.withLock { s in
            let elapsed = Monotonic.seconds - start
            switch event {
            case let .removed(path):
                return "removed \(path) (another layout's)"
            case let .checking(files, bytes):
                return "checking \(files) \(files == 1 ? "file" : "files") written before (\(Units.bytes(bytes))): reading back their CRC-32"
            case let .rewriting(path, reason):
                return "rewriting \(path): \(reason)"
            case let .started(files, bytes, keptFiles, keptBytes):
                s.totalFiles = files
                s.totalBytes = bytes
                s.keptFiles = keptFiles
                s.keptBytes = keptBytes
                let writing = files == 0 ? "nothing to write" : "writing \(files) files, \(Units.bytes(bytes))"
                return keptFiles == 0 ? (interactive ? nil : writing)
                    : "kept \(keptFiles) \(keptFiles == 1 ? "file" : "files") (\(Units.bytes(keptBytes))) written before and intact; " + writing
            case let .wrote(bytes):
                s.bytes += bytes
                guard interactive, elapsed - s.lastDraw >= 0.1 else { return nil }
                s.lastDraw = elapsed
                return bar(s, elapsed: elapsed)
            case let .finished(path, bytes):
                s.files += 1
                if interactive { return bar(s, elapsed: elapsed) }
                return "wrote \(path) (\(Units.bytes(bytes))) [\(s.files)/\(s.totalFiles)]"
            }
        }
        guard let line else { return }
        // On a terminal the bar is redrawn in place; other lines end it.
        if case .wrote = event { Console.write("\r\u{1B}[K" + line, fd: 2) }
        else if case .finished = event, interactive { Console.write("\r\u{1B}[K" + line, fd: 2) }
        else { Console.write((interactive ? "\r\u{1B}[K" : "") + line + "\n", fd: 2) }
    }

    /// Ends the bar's line and prints a summary.
    func finish() {
        let s = state.withLock { $0 }
        let elapsed = max(Monotonic.seconds - start, 1e-9)
        if interactive { Console.write("\r\u{1B}[K", fd: 2) }
        var line = "done: wrote \(s.files) files, \(Units.bytes(s.bytes)) in \(Units.duration(elapsed))"
        if s.bytes > 0 { line += " (\(Units.rate(bytesPerSecond: Double(s.bytes) / elapsed)))" }
        if s.keptFiles > 0 { line += "; kept \(s.keptFiles) \(s.keptFiles == 1 ? "file" : "files") (\(Units.bytes(s.keptBytes))) written before" }
        Console.error(line)
    }

    private func bar(_ s: State, elapsed: Double) -> String {
        ProgressDisplay.bar(files: s.files, totalFiles: s.totalFiles, bytes: s.bytes, totalBytes: s.totalBytes, elapsed: elapsed)
    }

    /// The bar convert and verify redraw on a terminal: done of total,
    /// files and bytes, the rate and the time left at that rate.
    static func bar(files: Int, totalFiles: Int, bytes: Int, totalBytes: Int, elapsed: Double) -> String {
        let fraction = totalBytes > 0 ? Double(bytes) / Double(totalBytes) : 1
        let width = 24
        let filled = max(0, min(width, Int(fraction * Double(width))))
        let rate = elapsed > 0 ? Double(bytes) / elapsed : 0
        let eta = rate > 0 ? Double(max(0, totalBytes - bytes)) / rate : 0
        return "[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] "
            + "\(files)/\(totalFiles) files  \(Units.bytes(bytes))/\(Units.bytes(totalBytes))  "
            + "\(Units.rate(bytesPerSecond: rate))  ETA \(Units.duration(eta))"
    }
}
