import ShardFS

#if canImport(Glibc)
import Glibc
#endif

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
    let start = ProgressDisplay.now()
    let state = Locked(State())

    init(interactive: Bool = Console.stderrIsTerminal) {
        self.interactive = interactive
    }

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    func handle(_ event: ConvertEvent) {
        let line: String? = state.withLock { s in
            let elapsed = ProgressDisplay.now() - start
            switch event {
            case let .removed(path):
                return "removed \(path) (another layout's)"
            case let .checking(files, bytes):
                return "checking \(files) \(files == 1 ? "file" : "files") written before (\(Format.bytes(bytes))): reading back their CRC-32"
            case let .rewriting(path, reason):
                return "rewriting \(path): \(reason)"
            case let .started(files, bytes, keptFiles, keptBytes):
                s.totalFiles = files
                s.totalBytes = bytes
                s.keptFiles = keptFiles
                s.keptBytes = keptBytes
                let writing = files == 0 ? "nothing to write" : "writing \(files) files, \(Format.bytes(bytes))"
                return keptFiles == 0 ? (interactive ? nil : writing)
                    : "kept \(keptFiles) \(keptFiles == 1 ? "file" : "files") (\(Format.bytes(keptBytes))) written before and intact; " + writing
            case let .wrote(bytes):
                s.bytes += bytes
                guard interactive, elapsed - s.lastDraw >= 0.1 else { return nil }
                s.lastDraw = elapsed
                return bar(s, elapsed: elapsed)
            case let .finished(path, bytes):
                s.files += 1
                if interactive { return bar(s, elapsed: elapsed) }
                return "wrote \(path) (\(Format.bytes(bytes))) [\(s.files)/\(s.totalFiles)]"
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
        let elapsed = max(ProgressDisplay.now() - start, 1e-9)
        if interactive { Console.write("\r\u{1B}[K", fd: 2) }
        var line = "done: wrote \(s.files) files, \(Format.bytes(s.bytes)) in \(Format.seconds(elapsed))"
        if s.bytes > 0 { line += " (\(Format.bytes(Int(Double(s.bytes) / elapsed)))/s)" }
        if s.keptFiles > 0 { line += "; kept \(s.keptFiles) \(s.keptFiles == 1 ? "file" : "files") (\(Format.bytes(s.keptBytes))) written before" }
        Console.error(line)
    }

    private func bar(_ s: State, elapsed: Double) -> String {
        let fraction = s.totalBytes > 0 ? Double(s.bytes) / Double(s.totalBytes) : 1
        let width = 24
        let filled = min(width, Int(fraction * Double(width)))
        let rate = elapsed > 0 ? Double(s.bytes) / elapsed : 0
        let eta = rate > 0 ? Double(s.totalBytes - s.bytes) / rate : 0
        return "[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] "
            + "\(s.files)/\(s.totalFiles) files  \(Format.bytes(s.bytes))/\(Format.bytes(s.totalBytes))  "
            + "\(Format.bytes(Int(rate)))/s  ETA \(Format.seconds(eta))"
    }
}

enum Format {
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var value = Double(n), unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        return unit == 0 ? "\(n) B" : "\(fixed(value, 1)) \(units[unit])"
    }

    static func seconds(_ s: Double) -> String {
        let total = Int(s.rounded())
        return total >= 3600 ? "\(total / 3600)h\(twoDigits(total / 60 % 60))m" : "\(total / 60):\(twoDigits(total % 60))"
    }

    static func fixed(_ v: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (v * scale).rounded() / scale
        var text = "\(r)"
        if let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) - 1 < digits {
            text += String(repeating: "0", count: digits - (text.distance(from: dot, to: text.endIndex) - 1))
        }
        return text
    }

    static func twoDigits(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
}
