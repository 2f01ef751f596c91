"""Starting titan_worker.py process groups (gloo on 127.0.0.1) and reading
back what each job reported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 600


class JobFailed(AssertionError):
    """A TorchTitan job raised (or its group died): the consumer rejected the folder."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(jobs: list, world: int, workdir: Path) -> None:
    """Runs `jobs` on a `world`-process gloo group (one titan_worker.py per
    rank). A group that dies or times out leaves an error for every job
    without a result."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_file = workdir / f"jobs-world{world}-{time.monotonic_ns()}.json"
    jobs_file.write_text(json.dumps(jobs, indent=1))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs, logs = [], []
    for rank in range(world):
        log = workdir / f"{jobs_file.stem}-rank{rank}.log"
        logs.append(log)
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([sys.executable, str(HERE / "titan_worker.py"), str(jobs_file)],
                                          env=dict(env, RANK=str(rank)), stdout=f, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    status = []
    for p in procs:
        try:
            status.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            status.append(f"killed after {TIMEOUT_S} s")
    tail = "\n".join(f"--- rank {r} (exit {s}) {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
                     for r, (s, log) in enumerate(zip(status, logs)))
    for job in jobs:
        out = Path(job["out"])
        if not out.exists() and not list(out.parent.glob(out.name + ".error*")):
            Path(f"{out}.error-group").write_text(f"the {world}-process group ended without this job's result\n{tail}")


def result(out: Path) -> dict:
    if out.exists():
        return torch.load(out, weights_only=False)
    errors = sorted(out.parent.glob(out.name + ".error*"))
    raise JobFailed(f"{out.name}:\n" + ("\n".join(e.read_text() for e in errors) or "no result and no error"))
