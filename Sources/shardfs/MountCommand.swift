import ArgumentParser
import Logging
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a directory whose rank files are made on demand from SRC.",
        discussion: """
            MNT/model/ then holds every rank file of the layout (with --format xser, each
            with its .info.pt and .tensors/ folder), read-only, each reading exactly as
            `shardfs convert` writes it (except the zip CRC-32 fields, which are 0: torch
            never checks them, and a lazily served file cannot know them). Mounting reads
            headers only; switching layout is a remount. The command returns once the
            mount is ready and serves in the background; `shardfs unmount MNT` ends it.

            The trainer saves its own checkpoints next to pretrained_weight, so mount
            elsewhere (the same path on every node) and link the tag to the mount:

              mkdir -p /mnt/llama3-70b-tp32pp8
              shardfs mount /fsx/ubuntu/Meta-Llama-3-70B /mnt/llama3-70b-tp32pp8 \\
                  --tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32
              ln -sfn /mnt/llama3-70b-tp32pp8 /fsx/ubuntu/llama3_70B/pretrained_weight
            """
    )

    @Argument(help: "The Hugging Face model directory (config.json and *.safetensors).")
    var source: String

    @Argument(help: "An empty directory to mount on.")
    var mountpoint: String

    @OptionGroup(title: "Layout")
    var layout: LayoutFlags

    @Flag(help: "Stay attached and log to stderr instead of serving in the background.")
    var foreground = false

    @Flag(help: "Let other users read the mount (FUSE allow_other; with default_permissions).")
    var allowOther = false

    @Flag(help: ArgumentHelp(
        "Bypass the kernel page cache (FUSE direct_io).",
        discussion: "Faster for one streaming pass, but every re-read comes back to the daemon, and shared mmap of the files fails (ENODEV). torch.load(mmap=True) maps privately and works. Default off."))
    var directIO = false

    @Flag(name: .customLong("no-splice"), help: "Copy every byte through the daemon instead of handing the kernel source file descriptors.")
    var noSplice = false

    @Option(name: .customLong("max-read-kib"),
            help: "Largest read request in KiB (default 512: a 1 MiB reply no longer fits the 1 MiB pipe that splice needs).")
    var maxReadKiB = 512

    @Option(help: "Where the background daemon logs (default /tmp/shardfs-<mount point name>.log).")
    var logFile: String?

    @Option(help: .hidden)
    var readyFD: Int32?

    func validate() throws {
        guard (4...1024).contains(maxReadKiB) else { throw ValidationError("--max-read-kib must be between 4 and 1024, not \(maxReadKiB)") }
    }

    func run() throws {
        let mountpoint = MountTable.absolute(self.mountpoint)
        if readyFD == nil {
            try reportingErrors { () throws(ShardFSError) in try MountTable.checkMountPoint(mountpoint) }
        }
        let (checkpoint, plan) = try failing { () throws(ShardFSError) in try openAndPlan(source, layout) }
        guard foreground else {
            let log = logFile ?? "/tmp/shardfs-\(mountpoint.split(separator: "/").last ?? "root").log"
            try Daemon.start(arguments: Array(CommandLine.arguments.dropFirst()) + ["--foreground", "--ready-fd", "3"], logFile: log)
            let what = plan.options.format == .pt ? "\(plan.files.count) files" : "\(plan.files.count) rank files (\(plan.options.format))"
            Console.out("shardfs: serving \(what) of \(source) at \(mountpoint) (log: \(log))")
            return
        }
        if readyFD != nil {
            _ = setsid()  // leave the terminal's session: no SIGHUP, no Ctrl-C
            signal(SIGHUP, SIG_IGN)
        }
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "shardfs")
        logger.logLevel = .info
        var options = FUSEMountOptions(mountpoint: mountpoint)
        options.allowOther = allowOther
        options.directIO = directIO
        options.splice = !noSplice
        options.maximumRead = maxReadKiB << 10
        let fileSystem = MountedFileSystem(checkpoint: checkpoint, files: plan.virtualFiles(), maximumRead: options.maximumRead)
        let server = FUSEServer(fileSystem: fileSystem, options: options, logger: logger)
        logger.info("serving \(source) as \(plan.options.summary)")
        try failing { () throws(ShardFSError) in
            try server.run(ready: {
                if let readyFD {
                    Console.write("ready\n", fd: readyFD)
                    close(readyFD)
                }
            })
        }
    }

    /// Reports an error to the user, or to the waiting parent when daemonized.
    private func failing<T>(_ body: () throws(ShardFSError) -> T) throws -> T {
        do {
            return try body()
        } catch {
            if let readyFD { Console.write("\(error)\n", fd: readyFD) }
            Console.error("shardfs: error: \(error)")
            throw ExitCode.failure
        }
    }
}

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount a ShardFS mount, also one whose daemon died (\"Transport endpoint is not connected\")."
    )

    @Argument(help: "The mount point.")
    var mountpoint: String

    @Flag(help: "Detach now even if files are open (they keep working until closed).")
    var lazy = false

    func run() throws {
        try reportingErrors { () throws(ShardFSError) in try MountTable.unmount(mountpoint, lazy: lazy) }
    }
}
