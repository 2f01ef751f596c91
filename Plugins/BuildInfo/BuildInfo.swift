import Foundation
import PackagePlugin

/// Gives the `shardfs` target a `BuildInfo` enum (version and git commit) for
/// `--version`, made by scripts/build-info.sh, so a binary from `swift build`
/// and one from scripts/package.sh say the same.
///
/// A build command, not a prebuild one: SwiftPM runs prebuild commands only
/// when it plans the build anew, so a commit that changed no Swift file left
/// the old commit in the binary. A build command runs whenever one of its
/// inputs changed; git rewrites `.git/logs/HEAD` on every commit, checkout and
/// reset, and `.git/index` on every add.
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let package = context.package.directoryURL
        let output = context.pluginWorkDirectoryURL.appending(path: "BuildInfo")
        let inputs = ["VERSION", "scripts/build-info.sh", ".git/HEAD", ".git/logs/HEAD", ".git/index"]
            .map { package.appending(path: $0) }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
        return [.buildCommand(displayName: "Recording the version and git commit",
                              executable: URL(fileURLWithPath: "/bin/sh"),
                              arguments: [package.appending(path: "scripts/build-info.sh").path, package.path, output.path],
                              inputFiles: inputs,
                              outputFiles: [output.appending(path: "BuildInfo.swift")])]
    }
}
