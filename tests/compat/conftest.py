"""Fixtures of the ShardFS compatibility suite (see README.md)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import checkpoints  # noqa: E402
from checks import assert_no_output, files_under  # noqa: E402,F401
# Every mount test's fixtures: `mounts` (always unmounts) and the session
# check that no fuse.shardfs mount outlives the tests.
from mounting import mounts, no_shardfs_mount_left  # noqa: E402,F401
from runner import Run, Shardfs  # noqa: E402,F401  (test_scale takes Run from here)

REPO = HERE.parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: large (zip64, > 8 GiB of output) test; runs by default")


def find_binary() -> Optional[Path]:
    env = os.environ.get("SHARDFS_BIN")
    if env:
        return Path(env)
    for p in (REPO / ".build/release/shardfs", REPO / ".build/debug/shardfs"):
        if p.exists():
            return p
    return None


@pytest.fixture(scope="session")
def shardfs() -> Shardfs:
    return Shardfs(find_binary(), missing="no shardfs binary: set SHARDFS_BIN or build one "
                                          f"({REPO}/.build/release/shardfs or {REPO}/.build/debug/shardfs)")


class CheckpointStore:
    """Builds each checkpoint of checkpoints.SPECS once per session."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict = {}

    def get(self, name: str) -> checkpoints.Checkpoint:
        if name not in self._built:
            spec = checkpoints.SPECS[name]
            self._built[name] = checkpoints.build_checkpoint(spec, self.root / name)
        return self._built[name]


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory) -> CheckpointStore:
    return CheckpointStore(tmp_path_factory.mktemp("checkpoints"))


@dataclass
class Conversion:
    run: Run
    out: Path


class ConversionCache:
    """Runs `shardfs convert` once per (checkpoint, args) per session."""

    def __init__(self, root: Path, shardfs: Shardfs, store: CheckpointStore):
        self.root = root
        self.shardfs = shardfs
        self.store = store
        self._done: dict = {}
        self._n = 0

    def convert(self, ckpt: str, args: list) -> Conversion:
        key = (ckpt, tuple(args))
        if key not in self._done:
            self.shardfs.require()
            src = self.store.get(ckpt).path
            self._n += 1
            out = self.root / f"out{self._n:03d}"
            run = self.shardfs.run("convert", src, out, *args)
            self._done[key] = Conversion(run, out)
        return self._done[key]

    def converted_ok(self, ckpt: str, args: list) -> Conversion:
        c = self.convert(ckpt, args)
        if c.run.returncode != 0:
            pytest.fail(f"conversion of {ckpt!r} failed:\n{c.run.describe()}", pytrace=False)
        return c


@pytest.fixture(scope="session")
def conversions(tmp_path_factory, shardfs, ckpts) -> ConversionCache:
    return ConversionCache(tmp_path_factory.mktemp("converted"), shardfs, ckpts)


@dataclass
class Package:
    """dist/shardfs-VERSION-linux-ARCH.tar.gz (scripts/package.sh), unpacked."""
    tarball: Path
    root: Path  # the one top-level folder

    @property
    def binary(self) -> Path:
        return self.root / "bin/shardfs"


@pytest.fixture(scope="session")
def package(tmp_path_factory) -> Package:
    """The tarball named by SHARDFS_PACKAGE, else the one scripts/package.sh
    made for this VERSION; fails (never skips) when there is none."""
    import tarfile

    version = (REPO / "VERSION").read_text().strip()
    env = os.environ.get("SHARDFS_PACKAGE")
    tarball = Path(env) if env else REPO / f"dist/shardfs-{version}-linux-{os.uname().machine}.tar.gz"
    if not tarball.exists():
        pytest.fail(f"no package {tarball}: run scripts/package.sh (or set SHARDFS_PACKAGE)", pytrace=False)
    out = tmp_path_factory.mktemp("package")
    with tarfile.open(tarball) as t:
        tops = {m.name.split("/")[0] for m in t.getmembers()}
        assert len(tops) == 1, f"{tarball}: more than one top-level entry: {sorted(tops)}"
        t.extractall(out, filter="tar")
    return Package(tarball, out / tops.pop())
