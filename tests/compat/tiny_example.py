"""examples/tiny-llama at TP=2 PP=2: the small layout the package and
unprivileged-user tests mount, and how they judge what was read through it."""
from __future__ import annotations

from pathlib import Path

import torch

from conftest import REPO
from mounting import zero_crcs

EXAMPLE = REPO / "examples/tiny-llama"
LAYOUT = ["--tp-size", "2", "--pp-size", "2"]
RANK_FILES = [f"dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt" for t in range(2) for p in range(2)]


def assert_read_as_converted(read: Path, converted: Path) -> None:
    """Files copied out of the mount (`read`) hold what `convert` wrote into
    `converted/model` but the zip CRC fields (0 in a mount), and load equal."""
    assert sorted(p.name for p in read.iterdir()) == sorted(RANK_FILES)
    for name in RANK_FILES:
        written = (converted / "model" / name).read_bytes()
        assert (read / name).read_bytes() == zero_crcs(written, name), f"{name}: the mount served other bytes"
        got = torch.load(read / name, weights_only=True, mmap=True)
        want = torch.load(converted / "model" / name, weights_only=True)
        assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want), name
