#!/usr/bin/env python3
"""Generates ../TorchLoadFixtureData.swift: real torch.save files as NxD's
trainer writes them, for the READERS (ZipDirectory, PickleReader,
TorchSaveReader), embedded as base64 literals. Also writes the fuzz seed
corpus: whole files to fuzz/corpus/zip/ and fuzz/corpus/torchsave/, their
data.pkl to fuzz/corpus/pickle/.

Run with the project's venv (torch 2.13 cpu), from the repository root:

    .venv/bin/python Tests/ShardFSTests/Fixtures/generate_torch_load_fixtures.py

Every tensor holds torch.arange values (plus a per-tensor base), so a test can
check a located offset by decoding the element there. Keep in step with
TorchSaveReaderTests.swift, which restates each file's keys, dtypes, shapes,
strides and values by hand. The xser files (references, .info.pt, a tensor
file) are in TorchSaveFixtureData.swift already (generate_torch_save_fixtures.py).
"""

import base64
import io
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "TorchLoadFixtureData.swift"
ROOT = HERE.parent.parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

sys.path.insert(0, str(HERE))
from generate_torch_save_fixtures import install_tensor_reference  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.zeros(2, dtype=torch.float64))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(4, 3)
        self.block = Block()


def module_state_dict():
    """nn.Module.state_dict(): an OrderedDict with a `_metadata` attribute
    (pickled with BUILD); keys embed.weight, block.scale, block.lin.weight,
    block.lin.bias (a module's parameters, then its buffers, then its children)."""
    net = Net()
    with torch.no_grad():
        net.embed.weight.copy_(torch.arange(12, dtype=torch.float32).reshape(4, 3))
        net.block.lin.weight.copy_(100 + torch.arange(6, dtype=torch.float32).reshape(2, 3))
        net.block.lin.bias.copy_(200 + torch.arange(2, dtype=torch.float32))
        net.block.scale.copy_(300 + torch.arange(2, dtype=torch.float64))
    return net.state_dict()


def parameters():
    p = torch.nn.Parameter(torch.arange(4, dtype=torch.float32))
    frozen = torch.nn.Parameter(10 + torch.arange(3, dtype=torch.bfloat16), requires_grad=False)
    stateful = torch.nn.Parameter(20 + torch.arange(2, dtype=torch.float16))
    stateful.partition_dim = 1  # an attribute: pickled by _rebuild_parameter_with_state
    # "tied" is the same object as "p": the pickle fetches it from the memo.
    return {"p": p, "frozen": frozen, "stateful": stateful, "tied": p}


def views():
    a = torch.arange(10, dtype=torch.float32)
    # one storage, three views: whole, offset 2, transposed (strides [1, 3])
    return {"a": a, "b": a[2:], "t": a[:6].view(2, 3).t()}


def column_major():
    w = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    # shape [3, 4], strides [1, 3]; c[i][j] = 4i + j at storage index i + 3j
    return {"w": w.t().contiguous().t()}


def dtypes():
    return {
        "bf16": torch.arange(5, dtype=torch.bfloat16),
        "fp16": 1000 + torch.arange(5, dtype=torch.float16),
        "fp32": 2000 + torch.arange(5, dtype=torch.float32),
        "fp64": 3000 + torch.arange(5, dtype=torch.float64),
        "scalar": torch.tensor(7.0, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def fixtures():
    ref = install_tensor_reference()
    return [
        # (swift name, file name given to torch.save, object)
        ("module", "dp_rank_00_tp_rank_00_pp_rank_00.pt", module_state_dict()),
        ("parameters", "parameters.pt", parameters()),
        ("views", "views.pt", views()),
        ("columnMajor", "colmajor.pt", column_major()),
        ("dtypes", "dtypes.pt", dtypes()),
        # a tensor file holding a view: storage offset 4, shape [2, 3]
        ("viewTensor", "tensor_3.pt", torch.arange(10, dtype=torch.float32)[4:].view(2, 3)),
        # an .info.pt with an expert-parallel tensor (refused for now)
        ("expertInfo", "ep.pt.info.pt", {0: {"dtype": torch.bfloat16, "shape": torch.Size([2]), "expert_model_parallel": True}}),
        # an xser reference dict for the corpus
        ("references", "refs.pt", {"a": ref(0), "b": ref(1)}),
    ]


def records(data):
    """Each record's bytes by name, read at its local header: zipfile's own
    reader would check the CRC-32, which torch.save wrote as 0."""
    result = {}
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        h = info.header_offset
        name_length = int.from_bytes(data[h + 26:h + 28], "little")
        extra_length = int.from_bytes(data[h + 28:h + 30], "little")
        start = h + 30 + name_length + extra_length
        result[info.filename] = data[start:start + info.file_size]
    return result


def rezip(data, compression, comment=b""):
    """The same records re-written by Python's zipfile (CRCs, no zip64, no
    alignment padding), stored or deflated."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        for name, content in records(data).items():
            z.writestr(name, content)
        z.comment = comment
    return out.getvalue()


def main():
    torch.serialization.set_crc32_options(False)
    lines = [
        "// Generated by Fixtures/generate_torch_load_fixtures.py with torch "
        + torch.__version__ + ". Do not edit.",
        "// Each literal is the base64 of a file written by torch.save (CRC-32 off), or rewritten by Python's zipfile.",
        "",
        "enum TorchLoadFixtureData {",
    ]
    (CORPUS / "zip").mkdir(parents=True, exist_ok=True)
    (CORPUS / "pickle").mkdir(parents=True, exist_ok=True)
    (CORPUS / "torchsave").mkdir(parents=True, exist_ok=True)

    def emit(swift_name, file_name, data, what):
        encoded = base64.b64encode(data).decode("ascii")
        lines.append(f"    /// {what} `{file_name}`: {len(data)} bytes.")
        lines.append(f"    static let {swift_name}FileName = \"{file_name}\"")
        lines.append(f"    static let {swift_name} = \"{encoded}\"")

    with tempfile.TemporaryDirectory() as tmp:
        saved = {}
        for swift_name, file_name, obj in fixtures():
            path = os.path.join(tmp, file_name)
            torch.save(obj, path)
            data = Path(path).read_bytes()
            saved[swift_name] = data
            if swift_name != "references":
                emit(swift_name, file_name, data, "torch.save to")
            (CORPUS / "zip" / file_name).write_bytes(data)
            (CORPUS / "torchsave" / file_name).write_bytes(data)
            pickle = next(v for n, v in records(data).items() if n.endswith("/data.pkl"))
            (CORPUS / "pickle" / (file_name + ".pkl")).write_bytes(pickle)
        # views.pt with every record deflated: refused; stored with a comment: read.
        emit("viewsDeflated", "views.pt", rezip(saved["views"], zipfile.ZIP_DEFLATED), "zipfile (deflated) rewrite of")
        stored = rezip(saved["views"], zipfile.ZIP_STORED, comment=b"rewritten by zipfile")
        emit("viewsRezipped", "views.pt", stored, "zipfile (stored, with a comment) rewrite of")
        (CORPUS / "zip" / "views-zipfile.pt").write_bytes(stored)
        (CORPUS / "torchsave" / "views-zipfile.pt").write_bytes(stored)
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} and {CORPUS}/zip, pickle, torchsave", file=sys.stderr)


if __name__ == "__main__":
    main()
