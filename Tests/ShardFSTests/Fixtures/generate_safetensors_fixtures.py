#!/usr/bin/env python3
"""Generates ../SafetensorsFixtureData.swift: real safetensors files and real
save_pretrained checkpoints, embedded as base64 string literals so the Swift
tests need neither Python nor resources.

Run with the project's venv (torch 2.13 cpu, safetensors 0.8.0,
transformers 5.24.0, huggingface_hub 2.4.0):

    .venv/bin/python Tests/ShardFSTests/Fixtures/generate_safetensors_fixtures.py

Every fixture records the tensors it was made from, in the order they were
given (state-dict order), with their bytes: the Swift tests rebuild the files
from that list alone and expect the same bytes. The output is deterministic
(fixed seed; no metadata dict of two or more entries, whose order safetensors
leaves to a Rust HashMap and so changes from run to run).
"""

import base64
import os
import sys
import tempfile
from pathlib import Path

import huggingface_hub
import safetensors
import torch
import transformers
from huggingface_hub.serialization._base import parse_size_to_int
from safetensors.torch import save_file
from transformers.core_model_loading import dot_natural_key

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "SafetensorsFixtureData.swift"

DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32", torch.float64: "float64"}


def safetensors_fixtures():
    # (swift name, tensors in state-dict order, metadata given to save_file).
    # Keep in step with SafetensorsFileTests.swift, which says what each pins.
    g = torch.Generator().manual_seed(1)

    def rand(*shape, dtype):
        return torch.randn(*shape, generator=g).to(dtype)

    mixed = {
        # state-dict order differs from the file's (dtype rank, then name)
        "zeta.weight": rand(3, 4, dtype=torch.float16),
        "alpha.bias": rand(5, dtype=torch.bfloat16),
        "mid.weight": rand(2, 3, dtype=torch.float32),
        "beta": rand(3, dtype=torch.float64),
        "alpha.weight": rand(2, 2, dtype=torch.bfloat16),
        "Alpha.upper": rand(7, dtype=torch.float16),
        "layers.10.w": rand(4, dtype=torch.float32),
        "layers.9.w": rand(4, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
        "scalar": torch.tensor(1.5, dtype=torch.float64),
    }
    escapes = {
        # serde_json's escaping, raw UTF-8, and UTF-8 byte order
        # (U+FF5E before U+1F600, the reverse of their UTF-16 order)
        "tab\there": rand(2, dtype=torch.float32),
        'quote"back\\slash/': rand(2, dtype=torch.float32),
        "ctl\x01\x1f\x7f": rand(2, dtype=torch.float32),
        "caf\u00e9": rand(2, dtype=torch.float32),
        "\U0001F600": rand(2, dtype=torch.float32),
        "\uff5e": rand(2, dtype=torch.float32),
    }
    return [
        ("mixed", mixed, {"format": "pt"}),
        ("noMetadata", {"b": rand(3, dtype=torch.float32), "a": rand(2, dtype=torch.bfloat16)}, None),
        ("emptyMetadata", {"b": rand(3, dtype=torch.float32), "a": rand(2, dtype=torch.bfloat16)}, {}),
        ("escapes", escapes, {"n\u00e4me\n\"q\"": "v\\al\x02"}),
        ("noTensors", {}, {"format": "pt"}),
        ("oneTensor", {"w": rand(16, dtype=torch.bfloat16)}, {"format": "pt"}),
    ]


def tiny_llama(tied, seed):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(config).to(torch.bfloat16)


def pretrained_fixtures():
    # (swift name, model name, tied, max_shard_size as given to save_pretrained,
    # reloaded). Keep in step with HuggingFaceShardsTests.swift.
    return [
        # 13472 bytes in 3 shards
        ("llamaSharded", "llama", False, "5KB", False),
        # tensors over 1100 bytes get shards of their own, numbered before the
        # shard being filled: lm_head.weight lands in shard 12 of 13
        ("llamaOversized", "llama", False, 1100, False),
        # the default 50GB: one model.safetensors, no index
        ("llamaSingle", "llama", False, "50GB", False),
        # tied embeddings: save_pretrained leaves lm_head.weight out
        ("llamaTiedSharded", "llamaTied", True, "4KB", False),
        # the same model saved, loaded back with from_pretrained, saved again:
        # save_pretrained then splits in dot_natural_key order, not state-dict order
        ("llamaReloadedSharded", "llama", False, "5KB", True),
        ("llamaReloadedOversized", "llama", False, 1100, True),
    ]


# Names in a given order, for dot_natural_key's sort (stable: "a.09" and "a.9"
# have equal keys).
NATURAL_ORDER_NAMES = [
    "layers.10.w", "layers.9.w", "a.9", "a.09", "layers.2.w", "a.b", "a", "a.1", "a.b10", "a.b2", "a.b01",
    "a.b", "shard_11", "shard_2", "shard_", "shard", "x.", "x..y", "x", "B", "b", "\u00e9", "z9a", "z10a", "100", "99",
    "1e", "e1", "e01", "e", "a.10.b", "a.10", "a.2.c", "00", "0", "a.B", "a._", "lm_head.weight",
    "model.embed_tokens.weight", "model.norm.weight", "model.layers.0.mlp.up_proj.weight",
]


SIZE_CASES = [
    "5GB", "500MB", "100KB", "1TB", "5gb", "5Gb", "5gB", " 5GB ", "5 GB", "\t5GB\n", "5GB\u3000",
    "1.5GB", "1.1GB", "0.3MB", "4.2GB", "7.5MB", ".5KB", "5.KB", "1e3KB", "1E-3GB", "1_000KB", "+5KB",
    "0KB", "-0GB", "0.0001KB", "\u0661KB",
    "1GiB", "5G", "5B", "5", "GB", "", " ", "abcGB", "0x10KB", "1__0KB", "_1KB", "1_KB", "1e_3KB",
    "infGB", "nanGB", "1e400GB", "5 G B", "5.5.5GB", "1..5GB", "e3KB", ".KB",
    "-5GB", "-0.5KB",
]


def swift_string(s):
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append("\\u{%x}" % ord(c))
    return '"' + "".join(out) + '"'


def tensor_literal(name, t):
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    shape = "[" + ", ".join(str(d) for d in t.shape) + "]"
    return (f"        Tensor(name: {swift_string(name)}, dtype: .{DTYPES[t.dtype]}, shape: {shape}, "
            f"bytes: \"{base64.b64encode(raw).decode('ascii')}\"),")


def main():
    lines = [
        f"// Generated by Fixtures/generate_safetensors_fixtures.py with safetensors {safetensors.__version__}, "
        f"transformers {transformers.__version__},",
        f"// huggingface_hub {huggingface_hub.__version__}, torch {torch.__version__}. Do not edit.",
        "",
        "import ShardFS",
        "",
        "enum SafetensorsFixtureData {",
        "    /// A tensor given to the writer: its bytes are base64.",
        "    struct Tensor {",
        "        let name: String",
        "        let dtype: DType",
        "        let shape: [Int]",
        "        let bytes: String",
        "    }",
        "",
        "    /// A file the writer wrote: its path relative to the folder, its bytes in base64.",
        "    struct File {",
        "        let path: String",
        "        let bytes: String",
        "    }",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for swift_name, tensors, metadata in safetensors_fixtures():
            path = os.path.join(tmp, swift_name + ".safetensors")
            save_file(tensors, path, metadata=metadata)
            data = Path(path).read_bytes()
            meta = "nil" if metadata is None else (
                "[" + ", ".join(f"({swift_string(k)}, {swift_string(v)})" for k, v in metadata.items()) + "]")
            lines.append(f"    /// save_file(tensors, path, metadata={metadata!r}): {len(data)} bytes.")
            lines.append(f"    static let {swift_name}Metadata: [(String, String)]? = {meta}")
            lines.append(f"    static let {swift_name}Tensors: [Tensor] = [")
            lines += [tensor_literal(k, v) for k, v in tensors.items()]
            lines.append("    ]")
            lines.append(f"    static let {swift_name} = \"{base64.b64encode(data).decode('ascii')}\"")
            lines.append("")

        models = {"llama": tiny_llama(tied=False, seed=0), "llamaTied": tiny_llama(tied=True, seed=1)}
        written_models = set()
        for swift_name, model_name, tied, max_shard_size, reloaded in pretrained_fixtures():
            model = models[model_name]
            if reloaded:
                first = os.path.join(tmp, swift_name + "-first")
                model.save_pretrained(first)
                model = transformers.AutoModelForCausalLM.from_pretrained(first, dtype="auto")
            folder = os.path.join(tmp, swift_name)
            model.save_pretrained(folder, max_shard_size=max_shard_size)
            names = sorted(n for n in os.listdir(folder) if n.startswith("model"))
            if model_name not in written_models:
                # state-dict order, less what save_pretrained leaves out (tied lm_head)
                saved = set()
                for n in names:
                    if n.endswith(".safetensors"):
                        from safetensors import safe_open
                        with safe_open(os.path.join(folder, n), "pt") as f:
                            saved.update(f.keys())
                state_dict = model.state_dict()
                lines.append(f"    /// {model_name}.state_dict() in its order, tied copies left out "
                             f"(tie_word_embeddings={tied}).")
                lines.append(f"    static let {model_name}Tensors: [Tensor] = [")
                lines += [tensor_literal(k, v) for k, v in state_dict.items() if k in saved]
                lines.append("    ]")
                lines.append("")
                written_models.add(model_name)
            how = "from_pretrained(saved {model_name})" if reloaded else model_name
            lines.append(f"    /// {how}.save_pretrained(dir, max_shard_size={max_shard_size!r}): "
                         f"the files but config.json and generation_config.json.")
            size = swift_string(max_shard_size) if isinstance(max_shard_size, str) else f'"{max_shard_size}"'
            lines.append(f"    static let {swift_name}MaxShardSize = {size}")
            lines.append(f"    static let {swift_name}: [File] = [")
            for n in names:
                data = Path(folder, n).read_bytes()
                lines.append(f"        File(path: \"{n}\", bytes: \"{base64.b64encode(data).decode('ascii')}\"),")
            lines.append("    ]")
            lines.append("")

    lines.append("    /// Names in a given order, and sorted by transformers' dot_natural_key (a stable sort).")
    lines.append("    static let naturalOrderNames: [String] = [")
    lines += [f"        {swift_string(n)}," for n in NATURAL_ORDER_NAMES]
    lines.append("    ]")
    lines.append("    static let naturalOrderSorted: [String] = [")
    lines += [f"        {swift_string(n)}," for n in sorted(NATURAL_ORDER_NAMES, key=dot_natural_key)]
    lines.append("    ]")
    lines.append("")
    lines.append("    /// huggingface_hub's parse_size_to_int on each input: its result, or nil where it raises.")
    lines.append("    static let parseSizeCases: [(String, Int?)] = [")
    for text in SIZE_CASES:
        try:
            result = str(parse_size_to_int(text))
        except (ValueError, OverflowError):
            result = "nil"
        lines.append(f"        ({swift_string(text)}, {result}),")
    lines.append("    ]")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
