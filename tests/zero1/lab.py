"""The session's training runs and tags, made once and in batches.

Starting torch_xla and xmp.spawn costs about 8 s a process and the first
training step of a process compiles for a few more, so the Lab runs every
job of one DP size in one worker process (worker.py), two processes at a
time. It learns what to make from the selected tests' parameters (`run`,
`case`, `resharder`), so that `-k` runs only what it needs:

- phase A, per Run: train and save tag A, then step on uninterrupted; and a
  fresh run that loads tag A and steps (`a(run)`);
- per (case, resharder): tag B (`tag_b`), by the reference resharder or by
  `$SHARDFS_BIN convert`;
- phase B, per (case, resharder): a fresh run in layout B that loads tag B
  and steps (`b(case, resharder)`).

A job that failed makes the tests that need it fail with its traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import torch

import reference_zero1
from cases import Case, Run

HERE = Path(__file__).resolve().parent
PARALLEL = int(os.environ.get("ZERO1_PARALLEL", "2"))
TIMEOUT_S = 1200


class JobFailed(Exception):
    pass


def shardfs_bin() -> Optional[str]:
    return os.environ.get("SHARDFS_BIN") or None


def shardfs_args(case: Case, tag_a: Path, out: Path, config: Path) -> list:
    """`shardfs convert TAG_A OUT --config CONFIG <B layout flags> --dp-size N
    [--format xser]`; --source-hw-backend when A's head order depends on it
    (qkv_linear with a KV multiplier: docs/commands.md)."""
    a = case.a.layout
    args = ["convert", str(tag_a), str(out), "--config", str(config), *case.layout.cli_args(),
            "--dp-size", str(case.dp)]
    if a.qkv_linear and a.kv_mult > 1:
        args += ["--source-hw-backend", a.backend]
    if case.xser:
        args += ["--format", "xser"]
    return args


def run_workers(groups: dict, workdir: Path) -> None:
    """groups {dp: [job]}: one worker process per DP size. Jobs write their
    own result (or error) files; a process that dies leaves an error for
    every job it did not finish."""

    def one(dp, jobs):
        jobs_file = workdir / f"jobs-dp{dp}-{os.getpid()}-{id(jobs)}.json"
        jobs_file.write_text(json.dumps(jobs, indent=1))
        env = dict(os.environ, PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(dp))
        try:
            p = subprocess.run([sys.executable, str(HERE / "worker.py"), str(jobs_file)], env=env,
                               capture_output=True, text=True, timeout=TIMEOUT_S, errors="replace")
            tail = f"worker (DP {dp}) exit status {p.returncode}\n{p.stderr[-4000:]}"
        except subprocess.TimeoutExpired as e:
            tail = f"worker (DP {dp}) timed out after {TIMEOUT_S} s\n{(e.stderr or b'')[-4000:]!r}"
        for job in jobs:
            out = Path(job["out"])
            if not out.exists() and not list(out.parent.glob(out.name + ".error*")):
                Path(f"{out}.error-worker").write_text(tail)

    with ThreadPoolExecutor(PARALLEL) as ex:
        for f in [ex.submit(one, dp, jobs) for dp, jobs in sorted(groups.items(), reverse=True)]:
            f.result()


def result(out: Path) -> dict:
    if out.exists():
        return torch.load(out, weights_only=False)
    errors = sorted(out.parent.glob(out.name + ".error*"))
    # the rank that raised first says why; the others only that a barrier broke
    texts = [e.read_text() for e in errors]
    texts.sort(key=lambda t: t.startswith("another rank failed"))
    raise JobFailed(f"{out.name}: " + ("\n".join(texts[:1]) or "no result and no error"))


class Lab:
    def __init__(self, root: Path, items: list):
        self.root = root
        self.runs: set = set()
        self.pairs: set = set()
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if "run" in params:
                self.runs.add(params["run"])
            if "case" in params:
                self.runs.add(params["case"].a)
                resharders = [params["resharder"]] if "resharder" in params else ["reference", "shardfs"]
                for r in resharders:
                    if r != "shardfs" or shardfs_bin():
                        self.pairs.add((params["case"], r))
        self._a_done = False
        self._b_done = False
        self._tags: dict = {}

    def _dir(self, *parts) -> Path:
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def config(self, case: Case) -> Path:
        path = self._dir("cases", case.name) / "config.json"
        if not path.exists():
            path.write_text(json.dumps(case.a.hf_config, indent=2))
        return path

    # -- phase A ----------------------------------------------------------------

    def tag_a(self, run: Run) -> Path:
        return self._dir("a", run.id) / "tag"

    def a(self, run: Run) -> dict:
        """{'tag', 'uninterrupted', 'resumed'} of run A."""
        if not self._a_done:
            self._a_done = True
            groups: dict = {}
            for r in sorted(self.runs, key=lambda r: r.id):
                d = self._dir("a", r.id)
                groups.setdefault(r.dp, []).extend(
                    [r.job("train", d / "tag", d / "uninterrupted.pt"), r.job("resume", d / "tag", d / "resumed.pt")])
            run_workers(groups, self._dir("jobs"))
        d = self._dir("a", run.id)
        return {"tag": d / "tag", "uninterrupted": result(d / "uninterrupted.pt"),
                "resumed": result(d / "resumed.pt")}

    # -- resharding -------------------------------------------------------------

    def tag_b(self, case: Case, resharder: str) -> Path:
        key = (case, resharder)
        if key not in self._tags:
            self._tags[key] = self._reshard(case, resharder)
        tag = self._tags[key]
        if isinstance(tag, str):
            raise JobFailed(tag)
        return tag

    def _reshard(self, case: Case, resharder: str):
        tag_a = self.a(case.a)["tag"]
        out = self._dir("cases", case.name, resharder) / "tag"
        if resharder == "reference":
            try:
                reference_zero1.reshard(tag_a, out, case.a.hf_config, case.a.layout, case.layout, case.dp,
                                        xser=case.xser)
            except Exception:  # noqa: BLE001 - the test shows it
                return "reference resharder failed:\n" + traceback.format_exc()
            return out
        args = shardfs_args(case, tag_a, out, self.config(case))
        p = subprocess.run([shardfs_bin(), *args], capture_output=True, text=True, timeout=600, errors="replace")
        if p.returncode != 0:
            return (f"$ shardfs {' '.join(args)}\nexit status {p.returncode}\n"
                    f"--- stderr ---\n{p.stderr[-4000:]}\n--- stdout ---\n{p.stdout[-2000:]}")
        return out

    # -- phase B ----------------------------------------------------------------

    def b(self, case: Case, resharder: str) -> dict:
        if not self._b_done:
            self._b_done = True
            groups: dict = {}
            for c, r in sorted(self.pairs, key=lambda p: (p[0].name, p[1])):
                try:
                    tag = self.tag_b(c, r)
                except JobFailed:
                    continue
                d = self._dir("cases", c.name, r)
                groups.setdefault(c.dp, []).append(c.b.job("resume", tag, d / "resumed.pt"))
            run_workers(groups, self._dir("jobs"))
        self.tag_b(case, resharder)
        return result(self._dir("cases", case.name, resharder) / "resumed.pt")
