"""Running the binary under test: `Shardfs` and the `Run` it returns, for
tests/compat and tests/dcp alike."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest


@dataclass
class Run:
    args: list
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ shardfs {' '.join(map(str, self.args))}\n"
            f"exit status {self.returncode}\n"
            f"--- stderr ---\n{self.stderr[-4000:]}\n--- stdout ---\n{self.stdout[-2000:]}"
        )


class Shardfs:
    """Runs the binary. With none, the calling test fails saying
    `missing` (tests/compat: a suite that cannot run its binary fails), or
    skips saying `skip` when given (tests/dcp judges only what it is given)."""

    def __init__(self, path: Optional[Path], missing: str = "no shardfs binary", skip: Optional[str] = None):
        self.path = Path(path) if path else None
        self.missing = missing
        self.skip = skip

    def require(self) -> Path:
        if self.path is None:
            if self.skip is not None:
                pytest.skip(self.skip)
            pytest.fail(self.missing, pytrace=False)
        if not self.path.exists():
            pytest.fail(f"SHARDFS_BIN={self.path} does not exist", pytrace=False)
        return self.path

    def run(self, *args, timeout: float = 600) -> Run:
        exe = self.require()
        args = [str(a) for a in args]
        p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, errors="replace")
        return Run(args, p.returncode, p.stdout, p.stderr)
