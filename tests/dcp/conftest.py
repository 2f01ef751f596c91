"""Fixtures of the DCP judge (see README.md).

What is judged: `$SHARDFS_BIN convert TAG OUT --format dcp --config
CONFIG.json [--source-hw-backend B] [--dcp-shards N]`, or, with
DCP_JUDGE_REFERENCE=1, the reference converter make_reference_dcp.py (how
the harness is checked). With neither, every test skips.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (HERE, HERE.parent / "compat"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import consumers  # noqa: E402
import expected  # noqa: E402
import groups  # noqa: E402
import make_reference_dcp  # noqa: E402
import tags  # noqa: E402
import titan  # noqa: E402
import variants  # noqa: E402
from runner import Shardfs  # noqa: E402

REFERENCE = os.environ.get("DCP_JUDGE_REFERENCE") == "1"
SHARDFS_BIN = os.environ.get("SHARDFS_BIN") or None
MODE = "reference" if REFERENCE else ("shardfs" if SHARDFS_BIN else None)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: 2-process (FSDP2) or torch_xla test; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "titan: needs TorchTitan v0.2.2's source (TORCHTITAN_SRC)")
    config.addinivalue_line("markers", "mount: shardfs mount (needs /dev/fuse); deselect with -m 'not mount'")


def pytest_collection_modifyitems(config, items):
    mine = [i for i in items if Path(i.path).resolve().parent == HERE]
    if MODE is None:
        skip = pytest.mark.skip(reason="SHARDFS_BIN is unset: nothing to judge (DCP_JUDGE_REFERENCE=1 judges "
                                       "the reference converter instead)")
        for item in mine:
            item.add_marker(skip)
        return
    if titan.source() is None:
        why = ("needs TorchTitan v0.2.2's source: set TORCHTITAN_SRC to a folder holding its torchtitan/ package"
               if not os.environ.get("TORCHTITAN_SRC") else
               f"TORCHTITAN_SRC={os.environ['TORCHTITAN_SRC']} holds no torchtitan/models/llama3/model/model.py")
        for item in mine:
            if item.get_closest_marker("titan"):
                item.add_marker(pytest.mark.skip(reason=why))


# ---------------------------------------------------------------------------
# running the command under test


def convert_args(tag: "tags.Tag", out: Path, shards: Optional[int] = None) -> list:
    """The command line this suite assumes (README.md, "Contract")."""
    args = ["convert", tag.path, out, "--format", "dcp", "--config", tag.config, *tag.spec.source_args]
    if shards is not None:
        args += ["--dcp-shards", str(shards)]
    return args


# ---------------------------------------------------------------------------
# the session's tags, folders and TorchTitan runs


class Store:
    """Builds everything once per session, for the selected tests only: tags,
    converted folders, broken variants, and the TorchTitan process groups
    (one batch per world size, started together at the first request)."""

    def __init__(self, root: Path, items: list):
        self.root = root
        self.mode = MODE
        self.shardfs = Shardfs(SHARDFS_BIN, skip="SHARDFS_BIN is unset")
        self._tags: dict = {}
        self._expected: dict = {}
        self._folders: dict = {}
        self._lock = threading.RLock()
        self._done: set = set()
        self._yard_done = False
        self.needs: set = set()  # (spec name, world, variant or None)
        self.yardsticks_needed = False
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if "world" in params and "spec" in params:
                self.needs.add((params["spec"], params["world"], None))
            if "variant" in params and params.get("judge_letter") == "b":
                self.needs.add((variants.BY_NAME[params["variant"]].tag, 1, params["variant"]))
            if "yardstick" in getattr(item, "fixturenames", ()) or params.get("judge_letter") == "d":
                self.yardsticks_needed = True

    # -- tags and their expectations --------------------------------------------

    convert_args = staticmethod(convert_args)

    def tag(self, name: str) -> "tags.Tag":
        if name not in self._tags:
            self._tags[name] = tags.make_tag(tags.BY_NAME[name], self.root / "tags" / name)
        return self._tags[name]

    def expected(self, name: str) -> "expected.Expected":
        if name not in self._expected:
            t = self.tag(name)
            self._expected[name] = expected.expect(t.path, t.cfg, t.spec.layout)
        return self._expected[name]

    # -- folders ----------------------------------------------------------------

    def reference_step(self, name: str) -> dict:
        """(c)'s yardstick: a plain AdamW step from the expected state."""
        key = ("step", name)
        if key not in self._expected:
            self._expected[key] = consumers.reference_step(self.expected(name))
        return self._expected[key]

    def folder(self, name: str, shards: Optional[int] = None) -> Path:
        """The folder under test for tag `name` (made once); fails the test
        with the command's output when the conversion fails."""
        return self.folder_of(self.tag(name), shards)

    def folder_of(self, t: "tags.Tag", shards: Optional[int] = None) -> Path:
        key = (str(t.path), shards)
        if key not in self._folders:
            self._folders[key] = self._convert(t, shards)
        got = self._folders[key]
        if isinstance(got, str):
            pytest.fail(got, pytrace=False)
        return got

    def _convert(self, t: "tags.Tag", shards: Optional[int]):
        out = self.root / "out" / (t.spec.name + (f"-shards{shards}" if shards else ""))
        out.parent.mkdir(parents=True, exist_ok=True)
        if MODE == "reference":
            try:
                make_reference_dcp.convert(t.path, out, t.cfg, shards=shards or 1, backend=t.spec.layout.backend)
            except Exception:  # noqa: BLE001 - the test shows it
                return "the reference converter failed:\n" + traceback.format_exc()
            return out
        run = self.shardfs.run(*convert_args(t, out, shards))
        if run.returncode != 0:
            return f"the conversion under test failed:\n{run.describe()}"
        return out

    def variant(self, name: str) -> Path:
        key = ("variant", name)
        if key not in self._folders:
            v = variants.BY_NAME[name]
            e = self.expected(v.tag)
            self._folders[key] = make_reference_dcp.save(e, self.root / "variants" / name,
                                                         edit=lambda sd: v.edit(sd, e))
        return self._folders[key]

    # -- TorchTitan process groups ----------------------------------------------

    def _config_file(self, which: str) -> Path:
        path = self.root / "configs" / which / "config.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(tags.CONFIG if which == "suite" else tags.zero1_config(), indent=2))
        return path

    def _job_out(self, name: str, world: int, variant: Optional[str]) -> Path:
        return self.root / "titan" / f"world{world}" / f"{variant or name}.pt"

    def _ensure(self, extra=(), yardsticks: bool = False) -> None:
        """Runs, in one process group per world size started together, every
        job wanted and not yet run: the selected tests' (announced by their
        parameters) and `extra`."""
        with self._lock:
            self.needs |= set(extra)
            self.yardsticks_needed |= yardsticks
            todo = sorted(self.needs - self._done, key=lambda n: (n[1], n[0], n[2] or ""))
            yard = self.yardsticks_needed and not self._yard_done
            self._done |= set(todo)
            self._yard_done |= yard
            batches: dict = {}
            for name, world, variant in todo:
                try:
                    folder = self.variant(variant) if variant else self.folder(name)
                except BaseException:  # noqa: BLE001 - the test that needs it fails on its own
                    continue
                out = self._job_out(name, world, variant)
                batches.setdefault(world, []).append(
                    {"kind": "load", "dcp": str(folder), "config": str(self.tag(name).config),
                     "scratch": str(out.with_suffix(".scratch")), "out": str(out)})
            if yard:
                for which in ("suite", "zero1"):
                    out = self.root / "titan" / "yardstick" / f"{which}.pt"
                    batches.setdefault(1, []).append(
                        {"kind": "save", "config": str(self._config_file(which)),
                         "scratch": str(out.with_suffix(".scratch")), "out": str(out)})
            threads = [threading.Thread(target=groups.run_group,
                                        args=(jobs, world, self.root / "titan" / f"world{world}"))
                       for world, jobs in batches.items()]
            for th in threads:
                th.start()
            for th in threads:
                th.join()

    def titan_report(self, name: str, world: int, variant: Optional[str] = None) -> dict:
        """What TorchTitan's CheckpointManager loaded from the folder (b)."""
        if not variant:
            self.folder(name)  # a failed conversion fails the test here, with its output
        self._ensure([(name, world, variant)])
        return groups.result(self._job_out(name, world, variant))

    def yardstick(self, which: str = "suite") -> Path:
        """The folder TorchTitan's own CheckpointManager saved for the model."""
        self._ensure(yardsticks=True)
        return Path(groups.result(self.root / "titan" / "yardstick" / f"{which}.pt")["folder"])


@pytest.fixture(scope="session")
def store(request, tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("dcp"), request.session.items)


@pytest.fixture(scope="session")
def tt():
    """TorchTitan's modules, or None (the plain-torch consumers) when TORCHTITAN_SRC is unset."""
    src = titan.source()
    return titan.load(src) if src else None


@pytest.fixture(scope="session")
def yardstick(store) -> Path:
    return store.yardstick("suite")
