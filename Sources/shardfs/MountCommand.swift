import ArgumentParser
import Foundation
import Logging
import ShardFS

#if canImport(Glibc)
import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a directory whose files (rank files, or a Hugging Face or DCP checkpoint) are made on demand from SRC.",
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

            In a Slurm job, run the mount as a step of its own with --foreground (a
            background daemon ends with the step that started it), wait for it, and
            unmount before the job ends:

              srun --ntasks-per-node=1 --overlap shardfs mount SRC MNT ... --foreground &
              srun --ntasks-per-node=1 --overlap shardfs status MNT --wait 120
              srun ... (training)
              srun --ntasks-per-node=1 --overlap shardfs unmount MNT

            To also leave real files on FSx for later jobs, add --persist-to (each of 16
            nodes writing its share) and watch it with `shardfs status`:

              shardfs mount ... --persist-to /fsx/ubuntu/llama3_70B-tp32pp8 --part $SLURM_NODEID/16
              shardfs status /mnt/llama3-70b-tp32pp8

            A trained tag's whole state serves the same way: into another layout with
            its optimizer (MNT/model/, MNT/optim/, ...), or as the TorchTitan checkpoint
            TorchTitan resumes from (--format dcp: MNT/.metadata and MNT/*.distcp):

              shardfs mount /fsx/ubuntu/llama3_70B/step_1000 /mnt/titan/step-1000 \\
                  --config /fsx/ubuntu/Meta-Llama-3-70B --format dcp
            """
    )

    @Argument(help: "The source: a Hugging Face model directory (config.json and *.safetensors), an NxD checkpoint tag (TAG/model/ of rank files, with its optimizer in TAG/optim/ unless --weights-only; give --config), or a DCP checkpoint folder (.metadata and *.distcp, as TorchTitan saves; give --config, and --dp-size for NxD output).")
    var source: String

    @Argument(help: "An empty directory to mount on.")
    var mountpoint: String

    @OptionGroup(title: "Source")
    var sourceFlags: SourceFlags

    @OptionGroup(title: "Layout")
    var layout: LayoutFlags

    @Flag(help: "Stay attached and log to stderr instead of serving in the background.")
    var foreground = false

    @Flag(help: "Let other users read the mount (FUSE allow_other; with default_permissions).")
    var allowOther = false

    @Flag(help: ArgumentHelp(
        "Serve every file through the kernel page cache instead of FUSE direct_io.",
        discussion: "By default every read of a file of 8 MiB or more goes to the daemon (direct_io): a rank file is read once per node, and this streams 2-3x faster than the page-cache path, whose splice replies the kernel copies into its cache. The cost: re-reads come back to the daemon, and shared mmap (MAP_SHARED) of those files fails with ENODEV; torch.load(mmap=True) maps privately and works either way. Smaller files (xser's tensor files) always go through the page cache: their many small metadata reads would each be a round trip. So do the files of --format hf, which safetensors readers map shared. Use --page-cache when several processes on a node read the same files, or something maps them shared."))
    var pageCache = false

    @Flag(name: .customLong("no-splice"), help: ArgumentHelp(
        "Copy every byte through the daemon: splice nothing (neither sources nor --persist-to copies).",
        discussion: "By default the daemon hands the kernel file descriptors for bytes that pass unchanged (a persisted copy's, and a source's as --splice-sources says), saving a copy through user space."))
    var noSplice = false

    @Option(name: .customLong("splice-sources"), help: ArgumentHelp(
        "Which sources' bytes to splice rather than copy: always, leased or never.",
        discussion: "A spliced byte is read by the kernel when the reply is sent, after any check the daemon can make. A source on a local disk file system is read under a read lease: the kernel holds any other process's open for writing until the daemon has marked the source changed (every later read fails with EIO) and its reads in flight are sent, so no reader gets a mix of old and new bytes. Where no lease holds (a network or FUSE file system such as FSx for Lustre, where writers on other nodes never meet it, or a file already open for writing), 'always' (the default) splices too and checks the source after each reply: a read racing an in-place write may get either version, as reading the file directly would; the change is found and every later read fails. 'leased' copies those sources and checks them before each reply instead (slower: a cold load behind 500 µs storage measured 1.01x of converted files against 1.16x spliced). 'never' copies and checks everything and takes no leases. `shardfs status` shows how the sources are served.",
        valueName: "when"))
    var spliceSources: SourceSplicing = .always

    @Option(name: .customLong("max-read-kib"),
            help: "Largest read request in KiB (default 512: a 1 MiB reply no longer fits the 1 MiB pipe that splice needs).")
    var maxReadKiB = 512

    @Option(help: "Threads answering the kernel's requests (at most).")
    var threads = 16

    @Option(name: .customLong("prefetch-mib"), help: ArgumentHelp(
        "Source bytes read ahead of each open file's reader, in MiB of the file (0: off).",
        discussion: "The mount knows which source bytes every file needs before the reader asks: it reads them into the page cache in large pieces ahead of the readers, so a cold start does not wait on storage a page at a time. Prefetched data lives in the page cache, not in the daemon; a file's prefetch stops when its last reader closes it.",
        valueName: "MiB"))
    var prefetchMiB = 64

    @Option(help: ArgumentHelp(
        "Also write every file the mount serves to DIR in the background, as `shardfs convert SRC DIR` would (rank files to DIR/model/, a training tag's optimizer to DIR/optim/ with its carried files).",
        discussion: "Files are written crash-safe (temporary name, fsync, rename) and recorded in DIR/.shardfs/; a daemon started again on the same DIR keeps the finished files and writes the rest. Reads through the mount keep priority, and each file, once persisted and read back intact, is served from DIR. `shardfs status MNT` shows the progress. A training tag's done marker (a DCP folder's .metadata) is written last, and only by a daemon persisting the whole layout: with --part, run `shardfs convert SRC DIR` once every share is done (it keeps the finished files). From a Hugging Face model no marker is written.",
        valueName: "DIR"))
    var persistTo: String?

    @Option(help: ArgumentHelp("With --persist-to: write only share I (0-based) of N even shares of the files, e.g. 3/16 (the mount still serves all).", valueName: "I/N"),
            transform: parsePart)
    var part: Part?

    @Option(help: "With --persist-to: files written at once (each backs off while the mount serves reads).")
    var persistJobs = 2

    @Option(name: .customLong("persist-bandwidth-mib"), help: "With --persist-to: at most this many MiB/s written (default: no limit).")
    var persistBandwidthMiB: Int?

    @Flag(help: "With --persist-to: replace what DIR holds when it was made for another layout or source.")
    var force = false

    @Option(help: ArgumentHelp(
        "Where the background daemon logs.",
        discussion: "By default, in a directory of the user running the mount: $XDG_STATE_HOME/shardfs/ or ~/.local/state/shardfs/ (/var/log/shardfs/ for root), in a file named after the whole mount path and the host, e.g. mnt%2Fllama3-70b-tp32pp8@ip-10-1-2-3.log. The mount command prints it and `shardfs status` shows it. No symlink is followed to the log.",
        valueName: "FILE"))
    var logFile: String?

    /// The log the parent opened, recorded by the daemon for `shardfs status`.
    @Option(help: .hidden)
    var daemonLog: String?

    @Option(help: .hidden)
    var readyFD: Int32?

    func validate() throws {
        guard (4...1024).contains(maxReadKiB) else { throw ValidationError("--max-read-kib must be between 4 and 1024, not \(maxReadKiB)") }
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be between 1 and 256, not \(threads)") }
        guard (0...65536).contains(prefetchMiB) else { throw ValidationError("--prefetch-mib must be between 0 (off) and 65536, not \(prefetchMiB)") }
        if persistTo == nil {
            for (given, flag) in [(part != nil, "--part"), (force, "--force"), (persistBandwidthMiB != nil, "--persist-bandwidth-mib")] where given {
                throw ValidationError("\(flag) applies to --persist-to DIR, which is not given")
            }
        }
        try validateJobs(persistJobs, flag: "--persist-jobs")
        if let persistBandwidthMiB, !(1...(1 << 20)).contains(persistBandwidthMiB) {
            throw ValidationError("--persist-bandwidth-mib must be between 1 and 1048576 (1 TiB/s), not \(persistBandwidthMiB)")
        }
    }

    func run() throws {
        let mountpoint = MountTable.absolute(self.mountpoint)
        if readyFD == nil {
            try reportingErrors { () throws(ShardFSError) in
                try MountTable.checkMountPoint(mountpoint)
                if allowOther && geteuid() != 0 && !FUSEMountOptions.usersMayAllowOther() {
                    throw ShardFSError.badLayout(flag: "--allow-other", reason: "mounting as a user other than root, fusermount3 allows it only with user_allow_other in /etc/fuse.conf (a line an administrator adds)")
                }
            }
        }
        try failing { () throws(ShardFSError) in
            try LayoutPlan.checkPart(part ?? .whole, format: layout.format)
            _ = try layout.options()
        }
        guard foreground else {
            // The daemon opens the source and plans (a trained 405B tag is
            // 60,000 files to parse: doing it here as well doubled the time
            // to ready); its notes and any refusal come back through the pipe.
            let (log, logFD) = try failing { () throws(ShardFSError) in try openLog(mountpoint: mountpoint) }
            let what = try Daemon.start(arguments: Array(CommandLine.arguments.dropFirst()) + ["--foreground", "--ready-fd", "3", "--daemon-log", log],
                                        logFile: log, logFD: logFD)
            Console.out("shardfs: serving \(what) of \(source) at \(mountpoint) (log: \(log))")
            if let job = ProcessInfo.processInfo.environment["SLURM_JOB_ID"] {
                // Measured under proctrack/cgroup: the step's cgroup holds the
                // daemon, so Slurm kills it when the step ends, leaving a dead mount.
                Console.error("shardfs: note: in Slurm job \(job) this background daemon ends with the job step that started it; to serve the whole job, run `srun --ntasks-per-node=1 --overlap shardfs mount ... --foreground &` and unmount before the job ends (docs/cluster.md: \"Mounting in a Slurm job\")")
            }
            return
        }
        if readyFD != nil {
            _ = setsid()  // leave the terminal's session: no SIGHUP, no Ctrl-C
            signal(SIGHUP, SIG_IGN)
        }
        let (checkpoint, plan) = try failing { () throws(ShardFSError) in
            try openAndPlan(source, sourceFlags, layout) { note in
                Console.error(note)
                if let readyFD { Daemon.relay(note, fd: readyFD) }
            }
        }
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "shardfs")
        logger.logLevel = .info
        var options = FUSEMountOptions(mountpoint: mountpoint)
        options.allowOther = allowOther
        // safetensors readers map their files shared, which direct_io refuses.
        options.directIO = !pageCache && plan.options.format != .hf
        options.splice = !noSplice
        options.maximumRead = maxReadKiB << 10
        options.maximumThreads = threads
        let files = plan.virtualFiles()
        var prefetch = Prefetcher.Options()
        prefetch.window = prefetchMiB << 20
        let fileSystem = MountedFileSystem(checkpoint: checkpoint, files: files, maximumRead: options.maximumRead,
                                           prefetch: prefetchMiB > 0 ? prefetch : nil, splicing: spliceSources)
        let materialiser = try persistTo.map { directory in
            try failing { () throws(ShardFSError) in
                try makeMaterialiser(directory: directory, checkpoint: checkpoint, plan: plan, files: files, fileSystem: fileSystem, logger: logger)
            }
        }
        let summary = plan.options.summary, sourceDirectory = self.source
        let totalBytes = files.reduce(0) { $0 + $1.file.size }
        let server = FUSEServer(fileSystem: fileSystem, options: options, logger: logger) { reads, bytes in
            MountStatus(mountpoint: mountpoint, source: sourceDirectory, layout: summary, pid: getpid(), files: files.count, bytes: totalBytes,
                        readsServed: reads, bytesServed: bytes, persist: materialiser?.materialiser.status, log: daemonLog,
                        sources: fileSystem.sourceServing)
        }
        materialiser?.server.set(server)
        logger.info("serving \(source) as \(plan.options.summary)")
        try failing { () throws(ShardFSError) in
            try server.run(ready: {
                materialiser?.materialiser.start()
                if let readyFD {
                    Daemon.ready(serving(plan), fd: readyFD)
                    close(readyFD)
                }
            })
        }
        materialiser?.materialiser.stop()
    }

    /// What a mount of `plan` serves, in words.
    private func serving(_ plan: LayoutPlan) -> String {
        switch plan.options.format {
        case .pt: return "\(plan.files.count) files"
        case .xser: return "\(plan.files.count) rank files (xser)"
        case .hf: return "a Hugging Face checkpoint (\(plan.virtualFiles().count) files)"
        case .dcp: return "a DCP checkpoint (\(plan.dcp?.files.count ?? 0) .distcp files)"
        }
    }

    /// The background daemon's log, opened here so that a refusal (a symlink,
    /// a directory of another user) reaches the user before anything starts.
    private func openLog(mountpoint: String) throws(ShardFSError) -> (path: String, fd: Int32) {
        if let logFile {
            let path = MountTable.absolute(logFile)
            return (path, try DaemonLog.openNamed(path))
        }
        let environment = ProcessInfo.processInfo.environment
        let name = DaemonLog.fileName(mountpoint: mountpoint, host: DaemonLog.hostName())
        // A directory that cannot be made (no home, a home not mounted yet)
        // must not stop a mount; one that exists but is unsafe (a symlink,
        // another user's) is refused (openUsual throws).
        let usual: ShardFSError
        switch try DaemonLog.openUsual(name: name, euid: geteuid(), environment: environment,
                                       home: { DaemonLog.passwordHome(uid: geteuid()) }) {
        case let .opened(path, fd): return (path, fd)
        case let .outOfReach(error): usual = error
        }
        let fallback = try DaemonLog.openFallback(name: name, euid: geteuid(), environment: environment)
        Console.error("shardfs: note: the daemon's usual log directory is out of reach (\(usual)); logging to \(fallback.path) instead")
        return fallback
    }

    /// The materialiser of --persist-to, prepared (DIR claimed, finished files
    /// found) so that a refusal reaches the user before the mount exists.
    private func makeMaterialiser(directory: String, checkpoint: Checkpoint, plan: LayoutPlan,
                                  files: PlannedFiles, fileSystem: MountedFileSystem,
                                  logger: Logger) throws(ShardFSError) -> (materialiser: Materialiser, server: ServerBox) {
        let part = self.part ?? .whole
        let target = MountTable.absolute(directory)
        let mountpoint = MountTable.absolute(self.mountpoint)
        guard target != mountpoint, !target.hasPrefix(mountpoint + "/") else {
            throw ShardFSError.badLayout(flag: "--persist-to \(directory)", reason: "is inside the mount point \(mountpoint), which is read-only; persist to real storage")
        }
        var options = Materialiser.Options(directory: target, layout: plan.options.summary)
        options.part = part
        options.jobs = persistJobs
        options.bandwidth = persistBandwidthMiB.map { $0 << 20 }
        options.force = force
        // Stale files are judged against the whole layout, every --part share
        // included, so daemons persisting other shares never flag each other's.
        options.plannedPaths = files.map(\.path)
        let box = ServerBox()
        let materialiser = Materialiser(
            // A share cannot know when the others finish: a training tag's
            // `done` marker is persisted only by a daemon persisting it all.
            checkpoint: checkpoint, files: part == .whole ? files : try plan.virtualFiles(part: part),
            options: options, logger: logger,
            readersActive: { box.server?.readersActive() ?? false },
            verified: { path, copy in
                do throws(ShardFSError) {
                    try fileSystem.servePersisted(path, from: copy)
                } catch {
                    logger.warning("\(copy): not served from the copy: \(error)")
                }
            })
        try materialiser.prepare()
        return (materialiser, box)
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

/// The server, known only after the materialiser that reports to it is made.
final class ServerBox: Sendable {
    private let value = Locked<FUSEServer?>(nil)
    var server: FUSEServer? { value.withLock { $0 } }
    func set(_ server: FUSEServer) { value.withLock { $0 = server } }
}
