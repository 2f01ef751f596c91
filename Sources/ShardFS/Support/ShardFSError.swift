/// Every failure ShardFS reports to a user. Each case names what is at fault
/// (a file, a tensor, a config field or a flag) so the message alone tells the
/// user what to fix.
public enum ShardFSError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A safetensors file, index or directory entry is malformed or missing.
    case badSource(file: String, reason: String)
    /// `config.json` is missing, malformed or describes an unsupported model.
    case badConfig(field: String, reason: String)
    /// A tensor is missing, unknown, or contradicts the config.
    case badTensor(name: String, reason: String)
    /// The requested layout cannot be produced from this model.
    case badLayout(flag: String, reason: String)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// A source file is no longer the file its plan was made from (found
    /// when it was opened again, or checked after a read).
    case sourceChanged(file: String, reason: String)

    /// A failed system call reported by swift-system (which throws `Errno`).
    public static func io(path: String, operation: String, error: any Error) -> ShardFSError {
        .io(path: path, operation: operation, errno: (error as? Errno)?.rawValue ?? EIO)
    }

    public var description: String {
        switch self {
        case let .badSource(file, reason): return "\(file): \(reason)"
        case let .badConfig(field, reason): return "config.json: \(field): \(reason)"
        case let .badTensor(name, reason): return "tensor \(name): \(reason)"
        case let .badLayout(flag, reason): return "\(flag): \(reason)"
        case let .sourceChanged(file, reason): return "\(file): \(reason) since it was first opened"
        case let .io(path, operation, errno):
            return "\(path): \(operation) failed: \(ShardFSError.describe(errno: errno)) (errno \(errno))"
        }
    }

    /// The C library's words for errno `code` ("Permission denied"): the one
    /// place ShardFS asks for them, for its errors and for the messages the
    /// command line words itself.
    public static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }
}

import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
