"""The pure-torch reference converter: an NxD training tag -> the DCP folder
TorchTitan v0.2.2's CheckpointManager saves for a full checkpoint (model,
optimizer, lr_scheduler, train_state; no dataloader). It is what the judge
is self-checked with (DCP_JUDGE_REFERENCE=1) and "the Python way" of the
benchmarks: read every file of the tag into memory, compute the state
(expected.py), `torch.distributed.checkpoint.save` it.

    python tests/dcp/make_reference_dcp.py TAG OUT --config CONFIG.json
        [--source-hw-backend trn1|trn2] [--dcp-shards N]

`--dcp-shards N` writes N `.distcp` files (FileSystemWriter's thread_count:
one process, N files, as a rank with N writer threads writes them). The
layout of the tag (TP, PP, qkv_linear, fused QKV, KV multiplier) is read
from its files; the hardware backend (trn1's or trn2's head order under a KV
multiplier) cannot be, so it is a flag, as for `shardfs convert`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch.distributed.checkpoint as dcp  # noqa: E402
from torch.distributed.checkpoint import FileSystemWriter  # noqa: E402

from expected import Expected, expect, infer_layout  # noqa: E402


def save(e: Expected, out: Path, shards: int = 1, edit: Optional[Callable[[dict], None]] = None) -> Path:
    """dcp.save of the TorchTitan state dict of `e` (edit(sd) may change it
    first: the harness's broken variants)."""
    sd = e.titan_state_dict()
    if edit:
        edit(sd)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    dcp.save(sd, storage_writer=FileSystemWriter(str(out), thread_count=shards))
    return out


def convert(tag: Path, out: Path, cfg: dict, layout=None, shards: int = 1, backend: str = "trn1") -> Path:
    layout = layout or infer_layout(tag, cfg, backend)
    return save(expect(tag, cfg, layout), out, shards)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tag", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", type=Path, required=True, help="the model's config.json (or its folder)")
    ap.add_argument("--source-hw-backend", default="trn1", choices=["trn1", "trn2"])
    ap.add_argument("--dcp-shards", type=int, default=1)
    a = ap.parse_args(argv)
    config = a.config / "config.json" if a.config.is_dir() else a.config
    convert(a.tag, a.out, json.loads(config.read_text()), shards=a.dcp_shards, backend=a.source_hw_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
