#if canImport(Glibc)
import Glibc
#endif

// libFuzzer entry point and corpus replayer for the ShardFS parsers.
//
// Built with `-D FUZZING` and `--sanitize=fuzzer` (scripts/fuzz.sh), this file
// defines only LLVMFuzzerTestOneInput and libFuzzer supplies main; the target
// is chosen by SHARDFS_FUZZ_TARGET, since libFuzzer owns the command line.
// In a plain `swift build` it is an ordinary program that replays saved
// inputs (`shardfs-fuzz TARGET FILE...`), so the package builds without a
// fuzzer and a crashing input can be re-run under a debugger.

/// Each target takes one input and returns normally, or throws a ShardFSError
/// (a refusal, which is fine); any trap is a finding.
let fuzzTargets: [String: @Sendable ([UInt8]) -> Void] = [
    "header": HeaderTarget.run,
    "index": IndexTarget.run,
    "config": ConfigTarget.run,
    "planner": PlannerTarget.run,
    "zip": ZipTarget.run,
    "pickle": PickleTarget.run,
    "torchsave": TorchSaveTarget.run,
    "tag": TagTarget.run,
    "dcpmetadata": DCPMetadataTarget.run,
]

#if FUZZING
/// The target SHARDFS_FUZZ_TARGET names, looked up once.
let selectedTarget: @Sendable ([UInt8]) -> Void = {
    let name = getenv("SHARDFS_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = fuzzTargets[name] else {
        printError("shardfs-fuzz: set SHARDFS_FUZZ_TARGET to one of \(fuzzTargets.keys.sorted().joined(separator: ", "))")
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = size > 0 ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    selectedTarget(bytes)
    return 0
}
#else
@main
struct Replay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = fuzzTargets[name], arguments.count >= 2 else {
            printError("usage: shardfs-fuzz \(fuzzTargets.keys.sorted().joined(separator: "|")) FILE|DIR...")
            exit(2)
        }
        var count = 0
        for path in arguments.dropFirst() {
            for file in FuzzFiles.list(path) {
                target(FuzzFiles.read(file))
                count += 1
            }
        }
        print("shardfs-fuzz \(name): \(count) inputs replayed, none crashed")
    }
}
#endif
