// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ShardFS",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "shardfs", targets: ["shardfs"]),
        .library(name: "ShardFS", targets: ["ShardFS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLinux"),
        .target(name: "CGather"),
        .target(
            name: "ShardFS",
            dependencies: [
                "CFuse",
                "CZlib",
                "CLinux",
                "CGather",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            // Each folder's README says what it holds.
            exclude: ["README.md", "Source/README.md", "Format/README.md", "Layout/README.md", "VirtualFile/README.md",
                      "Output/README.md", "Convert/README.md", "Mount/README.md", "Persist/README.md", "FUSE/README.md",
                      "Verify/README.md", "Support/README.md"]
        ),
        .executableTarget(
            name: "shardfs",
            dependencies: [
                "ShardFS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            plugins: ["BuildInfo"]
        ),
        // `shardfs --version`: the VERSION file and the git commit, at build time.
        .plugin(name: "BuildInfo", capability: .buildTool()),
        // libFuzzer targets (scripts/fuzz.sh); a plain build makes a corpus replayer.
        .executableTarget(name: "shardfs-fuzz", dependencies: ["ShardFS"]),
        .testTarget(name: "ShardFSTests", dependencies: ["ShardFS", .product(name: "Logging", package: "swift-log")], exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
