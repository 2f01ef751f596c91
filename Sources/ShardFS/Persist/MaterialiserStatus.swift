/// Where a materialiser stands: what `shardfs status` shows and the daemon logs.
public struct MaterialiserStatus: Codable, Equatable, Sendable {
    public enum State: String, Codable, Sendable {
        /// Writing files (`backingOff` tells whether readers slow it down).
        case writing
        /// All written; reading back the files to verify them before serving from DIR.
        case verifying
        /// Every file of its part persisted and verified.
        case done
        /// Stopped by an error (`lastError`); the mount keeps serving.
        case failed
        /// Stopped by unmounting before it was done.
        case stopped
    }

    public var state: State = .writing
    public var directory: String
    public var part: String
    public var filesTotal = 0
    public var filesDone = 0
    /// Files found finished in DIR at start (kept, not rewritten).
    public var filesResumed = 0
    public var bytesTotal = 0
    public var bytesDone = 0
    /// Bytes written by this run, per second of its writing time.
    public var bytesPerSecond = 0.0
    public var etaSeconds: Double?
    /// Whether reads through the mount are slowing the writing down right now.
    public var backingOff = false
    /// Files now served from DIR instead of being made from the sources.
    public var filesServedFromDirectory = 0
    public var lastError: String?

    public init(directory: String, part: String) {
        self.directory = directory
        self.part = part
    }

    /// One line for logs and `shardfs status`.
    public var summary: String {
        var line = "\(state.rawValue): \(filesDone)/\(filesTotal) files, \(Units.bytes(bytesDone)) of \(Units.bytes(bytesTotal))"
        if bytesPerSecond > 0 { line += ", \(Units.rate(bytesPerSecond: bytesPerSecond))" }
        if let etaSeconds, state == .writing { line += ", ETA \(Units.duration(etaSeconds))" }
        if backingOff { line += ", backing off for readers" }
        if filesResumed > 0 { line += ", \(filesResumed) kept from before" }
        if let lastError { line += "; error: \(lastError)" }
        return line
    }
}
