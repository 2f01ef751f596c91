import ArgumentParser
import ShardFS
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Write every file of a layout (rank files to OUT/model/; a Hugging Face or DCP checkpoint to OUT/), without FUSE.",
        discussion: """
            Streams: never holds a whole tensor or file in memory. Each file is written
            under a temporary name, fsynced and renamed only when complete, so an
            interrupted run never leaves a partial file under a final name. Every check
            (headers, config, layout) happens before the first byte is written.

            The tutorial's conversion (Llama-3-70B, TP=32, PP=8, float32 as its
            transformers 4.x pipeline produced):

              shardfs convert /fsx/ubuntu/Meta-Llama-3-70B /fsx/ubuntu/llama3_70B/pretrained_weight \\
                  --tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32

            Split over the 16 nodes of a Slurm array (--array=0-15):

              shardfs convert ... --part $SLURM_ARRAY_TASK_ID/16

            OUT/.shardfs/ records the layout, the sources and each finished file's size
            and CRC-32 (as `mount --persist-to` does). Run again on the same OUT (after a
            crash, a kill, or a failed array task), convert keeps the files that read back
            with their recorded CRC-32 and writes the rest. An OUT holding another layout
            or source, or files of its format (rank files; --format hf: safetensors; --format
            dcp: .distcp files) this layout does not write, is refused, naming them; --force
            removes them. Anything else in OUT (a README) is never touched.

            A trained NxD checkpoint tag is a source too (its layout is read from its
            files). Its ZeRO-1 optimizer state (TAG/optim/), scheduler.pt and step go
            with it into another layout (resuming on another cluster shape), or into a
            TorchTitan checkpoint (--format dcp); --weights-only leaves them out, and
            --format hf writes the weights alone:

              TAG=/fsx/ubuntu/llama3_70B/step_1000
              MODEL=/fsx/ubuntu/Meta-Llama-3-70B
              shardfs convert $TAG /fsx/ubuntu/llama3_70B_tp32pp4/step_1000 \\
                  --config $MODEL --tp-size 32 --pp-size 4 --kv-size-multiplier 4 \\
                  --qkv-linear --fuse-qkv --dp-size 2
              shardfs convert $TAG /fsx/ubuntu/titan/checkpoint/step-1000 \\
                  --config $MODEL --format dcp --dcp-shards 64
              shardfs convert $TAG /fsx/ubuntu/llama3-70b-hf --config $MODEL --format hf

            --format dcp writes what TorchTitan's CheckpointManager saves (model, AdamW,
            LR scheduler, step; no data loader): resume with
            checkpoint.exclude_from_loading = ["dataloader"] (and
            initial_load_model_only = false when the folder is given as
            checkpoint.initial_load_path). Its .metadata, which makes the folder a
            checkpoint, is written last; with --part, by the share that finishes last.
            """
    )

    @Argument(help: "The source: a Hugging Face model directory (config.json and *.safetensors), an NxD checkpoint tag (TAG/model/ of rank files, with its optimizer in TAG/optim/ unless --weights-only; give --config), or a DCP checkpoint folder (.metadata and *.distcp, as TorchTitan saves; give --config, and --dp-size for NxD output).")
    var source: String

    @Argument(help: "The output root (the checkpoint tag directory); rank files go to OUT/model/ (a training tag's optimizer to OUT/optim/), a Hugging Face or DCP checkpoint (--format hf, dcp) to OUT/.")
    var output: String

    @OptionGroup(title: "Source")
    var sourceFlags: SourceFlags

    @OptionGroup(title: "Layout")
    var layout: LayoutFlags

    @Option(help: "Files written at once, 1 to 64 (default: the number of cores; each holds about 10 MiB of buffers).")
    var jobs: Int = min(WorkerPool.cores, WorkerPool.maximumWorkers)

    @Option(help: ArgumentHelp("Write only share I (0-based) of N even shares of the files, e.g. 3/16.", valueName: "I/N"),
            transform: parsePart)
    var part: Part = .whole

    @Flag(help: ArgumentHelp(
        "Replace what OUT holds when it was made for another layout or source.",
        discussion: "Removes its files that this layout does not write (and empty P.tensors/ folders) and forgets its manifest; the others are rewritten. Without --force such an OUT is refused and left as it is."))
    var force = false

    func validate() throws {
        try validateJobs(jobs, flag: "--jobs")
    }

    func run() throws {
        let (checkpoint, plan) = try reportingErrors { () throws(ShardFSError) in
            try openAndPlan(source, sourceFlags, layout)
        }
        let display = ProgressDisplay()
        Interruption.install()
        _ = try reportingErrors { () throws(ShardFSError) in
            try Converter(checkpoint: checkpoint, plan: plan).run(
                root: output, part: part, jobs: jobs, force: force,
                isCancelled: { Interruption.requested.load(ordering: .relaxed) },
                events: display.handle)
        }
        display.finish()
    }
}

/// SIGINT/SIGTERM during a conversion: the workers stop between chunks and
/// remove their temporary files instead of dying with them half written.
enum Interruption {
    /// An `Atomic`, not a `Locked`: the signal handler sets it, and a lock
    /// taken there would deadlock should the signal land on a thread that
    /// holds it (only lock-free atomics are async-signal-safe).
    static let requested = Atomic<Bool>(false)

    static func install() {
        for signal in [SIGINT, SIGTERM] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { _ in Interruption.requested.store(true, ordering: .relaxed) }
            sigemptyset(&action.sa_mask)
            action.sa_flags = 0
            sigaction(signal, &action, nil)
        }
    }
}
