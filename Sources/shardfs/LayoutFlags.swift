import ArgumentParser
import ShardFS

extension HardwareBackend: ExpressibleByArgument {}
extension CheckpointFormat: ExpressibleByArgument {}

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
            help: "Times each KV head is replicated under --qkv-linear (converter: --kv_size_multiplier).")
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
                "File format: pt (one torch.save file per rank) or xser (each tensor in its own file, as NxD's trainer saves).",
                discussion: """
                    xser serves, for each rank file P, the layout NxD's trainer itself writes \
                    with --save_load_xser 1: P holds a dict of torch_xla TensorReference \
                    objects, P.info.pt their dtypes and shapes, and P.tensors/tensor_<tid>.pt \
                    each tensor alone. The trainer loads a tag as xser when it finds a \
                    *.tensors entry (else as plain pt files, so pt always loads); with xser its \
                    data-parallel ranks split the tensor files among themselves instead of each \
                    reading every byte: use it for jobs with many data-parallel ranks on shared \
                    storage. Reading P needs torch_xla (present on Neuron hosts). NxD's offline \
                    converter with --save_xser 1 (as the seed passes it) writes plain files and \
                    empty P.tensors folders instead; ShardFS writes the trainer's real layout.
                    """,
                valueName: "pt|xser"))
    var format: CheckpointFormat = .pt

    var options: LayoutOptions {
        LayoutOptions(tpSize: tpSize, ppSize: ppSize, virtualPPSize: virtualPPSize, kvSizeMultiplier: kvSizeMultiplier,
                      qkvLinear: qkvLinear, fuseQKV: fuseQKV, backend: hwBackend, dtype: dtype?.dtype, format: format)
    }

    func validate() throws {
        for (flag, value) in [("--tp-size", tpSize), ("--pp-size", ppSize), ("--virtual-pp-size", virtualPPSize),
                              ("--kv-size-multiplier", kvSizeMultiplier)] where value < 1 {
            throw ValidationError("\(flag) must be at least 1, not \(value)")
        }
    }
}

/// Opens a model directory and plans a layout, printing any warnings.
func openAndPlan(_ source: String, _ flags: LayoutFlags) throws(ShardFSError) -> (Checkpoint, LayoutPlan) {
    let checkpoint = try Checkpoint(directory: source)
    let plan = try LayoutPlanner.plan(checkpoint: checkpoint, options: flags.options)
    for warning in plan.warnings { Console.error("warning: \(warning)") }
    return (checkpoint, plan)
}

/// `--part I/N` (convert, and mount with --persist-to).
func parsePart(_ text: String) throws -> Part {
    guard let part = Part(parsing: text) else {
        throw ValidationError("--part takes I/N with 0 <= I < N, e.g. 0/4; got \(text)")
    }
    return part
}
