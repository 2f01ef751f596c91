"""Real training tags: tests/zero1 trains its tiny Llama for 3 steps with
torch_xla 2.9's real ZeroRedundancyOptimizer on XLA:CPU and saves the tag as
NxD's save_checkpoint does (tests/zero1/README.md). Those tags, converted,
are judged here as the synthetic ones are: (a) dcp.load, (c) one AdamW step,
(d) .metadata against TorchTitan's own save of that model.

The runs need `.venv-xla` (torch and torch_xla 2.9; `scripts/setup-xla.sh`
makes it, about 7 GB): without it these tests skip. They run tests/zero1's
own worker (worker.py, the `train` job of cases.Run) in `.venv-xla` in a
subprocess, all runs in one worker process (they share DP size 2).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import consumers
import expected
import judge
import tags

ZERO1 = Path(__file__).resolve().parents[1] / "zero1"
XLA_PYTHON = ZERO1.parents[1] / ".venv-xla" / "bin" / "python"
# tests/zero1/cases.py's runs: fp32 tensor step with master weights (TP 2,
# pt); bf16 int step without master weights (TP 2 PP 2, fused qkv_linear,
# pt); bf16 with master weights, xser, model files without tensor data (PP 2).
RUNS = ["TP2", "FUSED_BF16", "PP2_BF16"]
TIMEOUT_S = 1800


def _cases():
    spec = importlib.util.spec_from_file_location("zero1_cases", ZERO1 / "cases.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def real_tags(tmp_path_factory) -> dict:
    """{run name: tags.Tag} of tags saved by torch_xla's real optimizer."""
    if not XLA_PYTHON.exists():
        pytest.skip(f"no {XLA_PYTHON.parent.parent.name}: scripts/setup-xla.sh makes it (torch_xla 2.9, ~7 GB)")
    cases = _cases()
    root = tmp_path_factory.mktemp("xla-tags")
    config = root / "config.json"
    config.write_text(json.dumps(tags.zero1_config(), indent=2))
    jobs, made = {}, {}
    for name in RUNS:
        run = getattr(cases, name)
        (root / name).mkdir()
        jobs.setdefault(run.dp, []).append(run.job("train", root / name / "tag", root / name / "train.pt"))
        spec = tags.TagSpec(f"xla-{run.id}", run.layout, run.dp, xser=run.xser, master=run.master,
                            model_data=not run.avoid_lower, int_step=run.opt == "int")
        made[name] = tags.Tag(spec, root / name / "tag", config, state=None)
    for dp, batch in jobs.items():
        jobs_file = root / f"jobs-dp{dp}.json"
        jobs_file.write_text(json.dumps(batch, indent=1))
        env = dict(os.environ, PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(dp))
        p = subprocess.run([str(XLA_PYTHON), str(ZERO1 / "worker.py"), str(jobs_file)], env=env,
                           capture_output=True, text=True, timeout=TIMEOUT_S, errors="replace")
        for job in batch:
            if not Path(job["out"]).exists():
                errors = "\n".join(e.read_text() for e in Path(job["out"]).parent.glob("train.pt.error*"))
                made[Path(job["tag"]).parent.name] = (f"torch_xla run failed (exit {p.returncode}):\n{errors}\n"
                                                      f"{p.stderr[-3000:]}")
    return made


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_real_torch_xla_tag(store, tt, real_tags, run):
    t = real_tags[run]
    if isinstance(t, str):
        pytest.fail(t, pytrace=False)
    out = store.folder_of(t)
    e = expected.expect(t.path, t.cfg, t.spec.layout)
    assert e.master == t.spec.master
    judge.judge_dcp_load(out, e, tt)
    judge.judge_step(out, e, consumers.reference_step(e), tt)
    if tt:
        judge.judge_metadata(out, store.yardstick("zero1"))
