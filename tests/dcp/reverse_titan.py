"""TorchTitan checkpoints made by TorchTitan itself, for the reverse
direction (test_reverse.py: a DCP folder as ShardFS's SOURCE).

A gloo group of WORLD processes (FSDP2 over them when WORLD > 1, as
consumers.apply_fsdp applies it) builds TorchTitan v0.2.2's Llama3
`Transformer`, `build_optimizers` (AdamW, for-loop), `build_lr_schedulers`
(warm-up) and `CheckpointManager`, trains STEPS AdamW steps with seeded
gradients that change every step (so exp_avg, exp_avg_sq and step are
non-trivial), steps the scheduler after each, and saves a full checkpoint
with `CheckpointManager.save` (the folder `checkpoint/step-STEPS`). The
data loader is a stand-in with the state_dict of TorchTitan's
ParallelAwareDataloader (`{"dp_rank_<r>": pickled bytes, "world_size": w}`),
so the folder holds the `dataloader.*` items a real run saves.

Rank 0 also writes what the live objects hold at the save (consumers.report:
parameters and optimizer state as full tensors by TorchTitan name, the
optimizer's param groups, the scheduler's and train state's state): the
test's expectation starts from that, never from ShardFS.

    RANK=r WORLD_SIZE=w MASTER_ADDR=... MASTER_PORT=... python reverse_titan.py JOBS.json

Jobs: [{"config": CONFIG.json, "steps": N, "scratch": DIR, "out": FILE}];
FILE gets {"folder", "live", "world"}; a failing rank writes FILE.error<r>.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402

TIMEOUT_S = 600
# TorchTitan's AdamW with hyper-parameters unlike its defaults and torch's
# (a converter writing defaults shows), for-loop as tests/dcp uses it; a
# warm-up still running when the checkpoint is saved, so that the live lr
# (lr * STEPS+1 / WARMUP) is not the initial lr.
OPTIMIZER = dict(name="AdamW", lr=3e-3, beta1=0.85, beta2=0.97, eps=1e-7, weight_decay=0.05,
                 implementation="for-loop")
WARMUP, TRAINING_STEPS = 8, 20


def step_grad(fqn: str, shape, step: int) -> torch.Tensor:
    """The gradient of parameter `fqn` at training step `step` (1-based)."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{fqn}@{step}".encode()))
    return torch.randn(tuple(shape), generator=g) * (0.01 * step)


class DataLoaderState:
    """What TorchTitan's ParallelAwareDataloader.state_dict saves (a stand-in:
    the real one needs a tokenizer and a dataset)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def state_dict(self) -> dict:
        return {f"dp_rank_{self.rank}": pickle.dumps({"sample_idx": 96 * (self.rank + 1)}), "world_size": self.world}

    def load_state_dict(self, sd: dict) -> None:  # pragma: no cover - never loaded here
        pass


def _train_and_save(job: dict, tt, mesh) -> dict:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, distribute_tensor

    import consumers

    cfg = json.loads(Path(job["config"]).read_text())
    model = consumers.build_model(cfg, tt)
    if mesh is not None:
        consumers.apply_fsdp(model, mesh)
    opt = tt.optimizer.build_optimizers([model], tt.config.Optimizer(**OPTIMIZER), consumers._ParallelDims())
    lrs = tt.lr_scheduler.build_lr_schedulers(opt, tt.config.LRScheduler(warmup_steps=WARMUP), TRAINING_STEPS)
    ts = consumers.TrainState()
    for step in range(1, job["steps"] + 1):
        for fqn, p in model.named_parameters():
            g = step_grad(fqn, p.shape, step)
            p.grad = distribute_tensor(g, p.device_mesh, p.placements) if isinstance(p, DTensor) else g
        opt.step()
        lrs.step()
        opt.zero_grad()
    ts.step, ts.ntokens_seen = job["steps"], 64 * job["steps"]
    scratch = Path(job["scratch"])
    cc = tt.config.Checkpoint(enable=True, folder="checkpoint", interval=1, keep_latest_k=0,
                              last_save_model_only=False)
    cm = tt.checkpoint.CheckpointManager(
        dataloader=DataLoaderState(dist.get_rank(), dist.get_world_size()), model_parts=[model], optimizers=opt,
        lr_schedulers=lrs, states={"train_state": ts}, checkpoint_config=cc, sd_adapter=None, base_folder=str(scratch))
    try:
        cm.save(curr_step=job["steps"])
    finally:
        cm.close()
    live = consumers.report(model, opt, lrs, ts)
    live["local_shapes"] = {fqn: tuple(p.to_local().shape) if isinstance(p, DTensor) else tuple(p.shape)
                            for fqn, p in model.named_parameters()}
    return {"folder": str(scratch / "checkpoint" / f"step-{job['steps']}"), "live": live,
            "world": dist.get_world_size()}


def main() -> None:
    import titan_worker

    titan_worker.run_jobs(sys.argv[1], _train_and_save)


# ---------------------------------------------------------------------------
# the launcher (the test's side)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(jobs: list, world: int, workdir: Path) -> list:
    """Starts a `world`-process group running `jobs`; returns its processes."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_file = workdir / f"reverse-jobs-world{world}-{time.monotonic_ns()}.json"
    jobs_file.write_text(json.dumps(jobs, indent=1))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = []
    for rank in range(world):
        log = open(workdir / f"{jobs_file.stem}-rank{rank}.log", "wb")
        procs.append((subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(jobs_file)],
                                       env=dict(env, RANK=str(rank)), stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def wait(procs: list, jobs: list) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    tails = []
    for p, log in procs:
        try:
            status = p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            status = f"killed after {TIMEOUT_S} s"
            p.wait()
        log.close()
        tails.append(f"--- {log.name} (exit {status}) ---\n{Path(log.name).read_text(errors='replace')[-3000:]}")
    for job in jobs:
        out = Path(job["out"])
        if not out.exists() and not list(out.parent.glob(out.name + ".error*")):
            Path(f"{out}.error-group").write_text("the group ended without this job's result\n" + "\n".join(tails))


def result(out: Path) -> dict:
    if out.exists():
        return torch.load(out, weights_only=False)
    errors = sorted(out.parent.glob(out.name + ".error*"))
    raise AssertionError(f"TorchTitan's save failed ({out.name}):\n"
                         + ("\n".join(e.read_text() for e in errors) or "no result and no error"))


if __name__ == "__main__":
    main()
