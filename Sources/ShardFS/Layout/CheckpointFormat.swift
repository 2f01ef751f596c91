/// How the files of a layout are written: NxD rank files (docs/formats/xser.md), or a
/// Hugging Face checkpoint.
public enum CheckpointFormat: String, CaseIterable, Sendable, Codable {
    /// One `torch.save` file per rank: the dict of tensors.
    case pt
    /// NxD's xser layout, as its trainer saves it: per rank file `p`, the dict
    /// of `TensorReference`s at `p`, their dtypes and shapes at `p.info.pt`,
    /// and each tensor alone at `p.tensors/tensor_<tid>.pt`.
    case xser
    /// A Hugging Face checkpoint: `config.json` and safetensors files under
    /// the tensors' Hugging Face names, as `save_pretrained` writes them.
    case hf
    /// A PyTorch Distributed Checkpoint folder as TorchTitan saves it
    /// (`.metadata` and `*.distcp` files): the model under TorchTitan's
    /// Llama3 names, with a training tag's optimizer, LR scheduler and step.
    case dcp
}

extension RankFile {
    /// xser: the dtypes and shapes of the rank file at `path`.
    public static func xserInfoPath(_ path: String) -> String { path + ".info.pt" }

    /// xser: the file of tensor `tid` (its index in the rank file).
    public static func xserTensorPath(_ path: String, tid: Int) -> String { path + ".tensors/tensor_\(tid).pt" }
}
