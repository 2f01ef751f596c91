import Foundation
import PackagePlugin

/// Gives the `shardfs` target a `BuildInfo` enum (version and git commit) for
/// `--version`, made by scripts/build-info.sh before every build, so a binary
/// from `swift build` and one from scripts/package.sh say the same.
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let output = context.pluginWorkDirectoryURL.appending(path: "BuildInfo")
        let script = context.package.directoryURL.appending(path: "scripts/build-info.sh")
        return [.prebuildCommand(displayName: "Recording the version and git commit",
                                 executable: URL(fileURLWithPath: "/bin/sh"),
                                 arguments: [script.path, context.package.directoryURL.path, output.path],
                                 outputFilesDirectory: output)]
    }
}
