import ArgumentParser
import ShardFS

@main
struct ShardFSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardfs",
        abstract: "Neuron Distributed (NxD) pre-sharded rank files, straight from Hugging Face safetensors.",
        discussion: """
            NxD training loads pretrained weights only as pre-sharded rank files,
            model/dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt, one per tensor x pipeline rank.
            ShardFS makes them from the original *.safetensors without loading the
            model into memory, byte for byte what NxD's convert_checkpoints.py writes.

            The HyperPod tutorial's Llama-3-70B layout (16 trn1.32xlarge, TP=32, PP=8):

              shardfs plan    /fsx/ubuntu/Meta-Llama-3-70B \\
                  --tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv
              shardfs convert /fsx/ubuntu/Meta-Llama-3-70B /fsx/ubuntu/llama3_70B/pretrained_weight \\
                  --tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype float32
            """,
        version: "shardfs \(BuildInfo.version) (commit \(BuildInfo.commit), \(BuildInfo.commitDate); libfuse \(FUSEServer.libfuseVersion))",
        subcommands: [ConvertCommand.self, PlanCommand.self, MountCommand.self, UnmountCommand.self, StatusCommand.self, VerifyCommand.self]
    )

    /// ArgumentParser's own main, after the malloc arenas are capped (before
    /// any worker thread allocates: `MallocArenas`).
    static func main() {
        MallocArenas.limit()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
