import ArgumentParser
import ShardFS

extension HardwareBackend: ExpressibleByArgument {}
extension CheckpointFormat: ExpressibleByArgument {}
extension SourceSplicing: ExpressibleByArgument {}

/// Output dtypes `--dtype` accepts.
enum OutputDType: String, CaseIterable, ExpressibleByArgument {
    case float32, bfloat16, float16

    var dtype: DType { DType(rawValue: rawValue)! }
}

/// The layout flags every command shares, named after NxD's converter flags
/// (`--tp_size` there is `--tp-size` here; booleans are real flags).
struct LayoutFlags: ParsableArguments {
    @Option(name: .customLong("tp-size"), help: "Tensor-parallel degree (converter: --tp_size).")
    var tpSize: Int = 1

    @Option(name: .customLong("pp-size"), help: "Pipeline-parallel degree (converter: --pp_size).")
    var ppSize: Int = 1

    @Option(name: .customLong("virtual-pp-size"), help: "Virtual pipeline stages per pipeline rank (converter: --virtual_pp_size).")
    var virtualPPSize: Int = 1

    @Option(name: .customLong("kv-size-multiplier"),
            help: ArgumentHelp(
                "Times each KV head is replicated under --qkv-linear (converter: --kv_size_multiplier).",
                discussion: """
                    With --qkv-linear, num_key_value_heads x multiplier must equal --tp-size (as NxD's \
                    converter needs), or the multiplier be 1 with --tp-size dividing num_key_value_heads \
                    (each rank whole KV heads and their Q heads, as NxD's trainer also trains).
                    """))
    var kvSizeMultiplier: Int = 1

    @Flag(name: .customLong("qkv-linear"),
          help: "GQA QKV linear layer: qkv_proj.weight_q/k/v keys and NxD's head order (converter: --qkv_linear 1).")
    var qkvLinear = false

    @Flag(name: .customLong("fuse-qkv"),
          help: "Concatenate each rank's q, k, v into qkv_proj.weight_qkv; needs --qkv-linear (converter: --fuse_qkv True).")
    var fuseQKV = false

    @Option(name: .customLong("hw-backend"),
            help: ArgumentHelp(
                "Trainium generation: trn1 or trn2 (converter: --hw_backend).",
                discussion: """
                    On trn2 with --qkv-linear and a KV multiplier above 1, ShardFS replicates each KV \
                    head m times in a row (repeat_interleave), as the trn2 runtime groups adjacent ranks \
                    around one KV head. NxD's converter tiles them as on trn1, which pairs Q heads with \
                    the wrong KV head; ShardFS deliberately differs there. With multiplier 1 they agree.
                    """))
    var hwBackend: HardwareBackend = .trn1

    @Option(name: .customLong("dtype"),
            help: "Output dtype: float32, bfloat16 or float16 (default: the checkpoint's own; float32 reproduces the tutorial's files, which transformers 4.x loads as float32).")
    var dtype: OutputDType?

    @Option(name: .customLong("format"),
            help: ArgumentHelp(
                "File format: pt (one torch.save file per rank), xser (each tensor in its own file, as NxD's trainer saves), hf (a Hugging Face checkpoint), or dcp (a TorchTitan checkpoint).",
                discussion: """
                    xser serves, for each rank file P, the layout NxD's trainer itself writes \
                    with --save_load_xser 1: P holds a dict of torch_xla TensorReference \
                    objects, P.info.pt their dtypes and shapes, and P.tensors/tensor_<tid>.pt \
                    each tensor alone. The trainer loads a tag as xser when it finds a \
                    *.tensors entry (else as plain pt files, so pt always loads); with xser its \
                    data-parallel ranks split the tensor files among themselves instead of each \
                    reading every byte: use it for jobs with many data-parallel ranks on shared \
                    storage. Reading P needs torch_xla (present on Neuron hosts). NxD's offline \
                    converter with --save_xser 1 (as the HyperPod tutorial passes it) writes plain files and \
                    empty P.tensors folders instead; ShardFS writes the trainer's real layout.

                    hf writes config.json and the tensors under their Hugging Face names, \
                    exactly as transformers' save_pretrained does (model.safetensors, or \
                    model-0000K-of-0000N.safetensors and model.safetensors.index.json past \
                    --max-shard-size): the way back from a trained NxD checkpoint. The layout \
                    flags do not apply to it.

                    dcp writes a PyTorch Distributed Checkpoint folder (.metadata and *.distcp) \
                    as TorchTitan v0.2.2 saves its Llama3: the model in float32 under TorchTitan's \
                    names (q and k in its RoPE row order), and from a training tag AdamW's state, \
                    one param group, the LR scheduler and the step, so a TorchTitan run resumes \
                    with its optimizer. The layout flags do not apply to it; --dcp-shards does.
                    """,
                valueName: "pt|xser|hf|dcp"))
    var format: CheckpointFormat = .pt

    @Option(name: .customLong("dp-size"),
            help: ArgumentHelp(
                "Data-parallel degree of the optimizer files, for a training tag with ZeRO-1 state (default: the tag's own).",
                discussion: """
                    A training tag's optim/ holds one file per (dp, tp, pp) rank: each parameter's \
                    Adam moments (and fp32 master weights) padded along dim 0 to a multiple of the \
                    DP size and cut in DP equal shards. ShardFS writes them as NxD's ZeRO-1 \
                    optimizer would hold them had the run used this layout from the start, so \
                    a run resumes on another cluster shape without restarting its optimizer.
                    """,
                valueName: "N"))
    var dpSize: Int?

    @Option(name: .customLong("dcp-shards"),
            help: ArgumentHelp(
                "--format dcp: the data-parallel ranks each tensor is cut into row chunks for (default: \(LayoutPlanner.defaultDCPShards)).",
                discussion: """
                    DCP's loader reads every stored chunk that overlaps a rank's rows whole, so a \
                    tensor stored whole would be read in full by every rank. Give the number of \
                    ranks TorchTitan shards the model over (its FSDP degree): each then reads \
                    about 1/N of the folder, from files of its own. Any N loads on any number of \
                    ranks; a matching one reads least.
                    """,
                valueName: "N"))
    var dcpShards: Int?

    @Option(name: .customLong("max-shard-size"),
            help: ArgumentHelp("--format hf: the largest safetensors file, in huggingface_hub's units (5GB = 5*10^9 bytes, 1GiB = 2^30).",
                               valueName: "SIZE"))
    var maxShardSize: String?

    /// The options; a flag that does not apply to the format is an error
    /// (exit status 1, like every refusal of a layout).
    /// The options as given; the engine refuses a flag that does not apply
    /// to the format (`LayoutOptions.checkApplicable`, exit status 1).
    func options() throws(ShardFSError) -> LayoutOptions {
        var options = LayoutOptions(tpSize: tpSize, ppSize: ppSize, virtualPPSize: virtualPPSize, kvSizeMultiplier: kvSizeMultiplier,
                                    qkvLinear: qkvLinear, fuseQKV: fuseQKV, backend: hwBackend, dtype: dtype?.dtype, format: format)
        if let maxShardSize { options.maxShardSize = try HuggingFaceShards.parseSize(maxShardSize) }
        options.dpSize = dpSize
        options.dcpShards = dcpShards
        try options.checkApplicable()
        return options
    }

    func validate() throws {
        for (flag, value) in [("--tp-size", tpSize), ("--pp-size", ppSize), ("--virtual-pp-size", virtualPPSize),
                              ("--kv-size-multiplier", kvSizeMultiplier), ("--dp-size", dpSize ?? 1)] where value < 1 {
            throw ValidationError("\(flag) must be at least 1, not \(value)")
        }
    }
}

/// What only the user can say of a source directory.
struct SourceFlags: ParsableArguments {
    @Option(name: .customLong("config"),
            help: ArgumentHelp("The model's config.json (or a directory holding it), for an NxD checkpoint source: its tags hold none.",
                               valueName: "FILE_OR_DIR"))
    var config: String?

    @Option(name: .customLong("source-hw-backend"),
            help: ArgumentHelp(
                "trn1 or trn2: the hardware an NxD checkpoint source was written for.",
                discussion: """
                    Its files cannot tell, and under --qkv-linear the two order attention heads \
                    differently. Needed only when that difference matters for the source's \
                    layout (ShardFS says so and stops); always accepted.
                    """))
    var sourceBackend: HardwareBackend?

    @Flag(name: .customLong("weights-only"),
          help: "For an NxD training tag: its weights only, leaving out optim/, scheduler.pt, user_content.pt and the markers.")
    var weightsOnly = false

    @Option(name: .customLong("optimizer-groups"),
            help: ArgumentHelp(
                "How the training script grouped parameters for its optimizer: the name parts of its no-decay group (bias,norm), or all for one group (default: inferred).",
                discussion: """
                    A ZeRO-1 optimizer file numbers parameters, not names: index i is the i-th \
                    parameter handed to the optimizer, groups in order. NxD's examples make group 0 \
                    of the parameters whose names contain neither "bias" nor "norm" and group 1 of \
                    the rest; ShardFS infers that rule, or one group, from the files and refuses \
                    when neither explains them.
                    """,
                valueName: "PARTS|all"))
    var optimizerGroups: String?

    var options: SourceOptions {
        get throws(ShardFSError) {
            var grouping: OptimizerGrouping?
            if let optimizerGroups {
                guard let parsed = OptimizerGrouping(flag: optimizerGroups) else {
                    throw ShardFSError.badLayout(flag: "--optimizer-groups", reason: "\(optimizerGroups): say the no-decay name parts, comma-separated (bias,norm), or all")
                }
                grouping = parsed
            }
            return SourceOptions(config: config, backend: sourceBackend, weightsOnly: weightsOnly, optimizerGrouping: grouping)
        }
    }
}

/// Opens a source (a Hugging Face model or an NxD checkpoint) and plans a
/// layout, telling `note` (stderr by default) what the user should know.
func openAndPlan(_ source: String, _ sourceFlags: SourceFlags, _ flags: LayoutFlags, announceSource: Bool = true,
                 note: (String) -> Void = { Console.error($0) }) throws(ShardFSError) -> (Checkpoint, LayoutPlan) {
    let options = try flags.options()
    var sourceOptions = try sourceFlags.options
    // A Hugging Face checkpoint holds weights only: a tag's optimizer state
    // is not read (but for the master weights of a tag whose model files
    // hold no data).
    if options.format == .hf { sourceOptions.weightsOnly = true }
    let checkpoint = try Checkpoint.open(source, options: sourceOptions)
    MallocArenas.releaseFree()
    if announceSource {
        if let layout = checkpoint.sourceLayout {
            note("source: NxD checkpoint, \(checkpoint.files.count) files, layout \(layout.summary)")
            if let state = checkpoint.trainingState {
                note("source: ZeRO-1 optimizer state at dp \(state.dpSize) (\(state.grouping)), carried: \(state.carried.map(\.path).joined(separator: ", "))")
            }
        } else if checkpoint.trainingState?.fromDCP == true {
            note("source: DCP checkpoint, \(checkpoint.files.filter { $0.name.hasSuffix(".distcp") }.count) .distcp files, with its AdamW state (NxD's groups: \(checkpoint.trainingState!.grouping))")
        }
        for text in checkpoint.trainingState?.notes ?? [] { note("note: \(text)") }
    }
    let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: options)
    MallocArenas.releaseFree()
    for warning in plan.warnings { note("warning: \(warning)") }
    return (checkpoint, plan)
}

/// `--part I/N` (convert, and mount with --persist-to).
func parsePart(_ text: String) throws -> Part {
    guard let part = Part(parsing: text) else {
        throw ValidationError("--part takes I/N with 0 <= I < N, e.g. 0/4; got \(text)")
    }
    return part
}

/// `--jobs` and its kin: threads of their own, each with its buffers, so
/// bounded like `WorkerPool` (a typo of 10000 must not ask for 100 GB).
func validateJobs(_ jobs: Int, flag: String) throws {
    guard (1...WorkerPool.maximumWorkers).contains(jobs) else {
        throw ValidationError("\(flag) must be between 1 and \(WorkerPool.maximumWorkers), not \(jobs)")
    }
}
