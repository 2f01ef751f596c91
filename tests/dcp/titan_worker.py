"""One rank of a gloo process group that runs TorchTitan's CheckpointManager
jobs, one after another (importing torch and TorchTitan costs seconds, so a
session starts one group per world size, not one per job):

    RANK=r WORLD_SIZE=w MASTER_ADDR=127.0.0.1 MASTER_PORT=p TORCHTITAN_SRC=... \\
        python titan_worker.py JOBS.json

Jobs (a JSON list):
- {"kind": "load", "dcp": DIR, "config": CONFIG.json, "scratch": DIR, "out": FILE}:
  TorchTitan's Transformer (FSDP2 over the group when it has 2 or more
  ranks), build_optimizers, build_lr_schedulers and a CheckpointManager with
  initial_load_path=DIR, initial_load_model_only=False,
  exclude_from_loading=["dataloader"]; `load()`; then what the model,
  optimizer, scheduler and train state hold (consumers.report, full
  tensors), then one optimizer step with the fixed gradients and the
  parameters after it ("stepped").
- {"kind": "save", "config": CONFIG.json, "scratch": DIR, "out": FILE}:
  the yardstick: the same objects after one training step, saved by
  CheckpointManager.save as a TorchTitan run saves a full checkpoint;
  {"folder": the step folder}.

Rank 0 writes each job's result to job["out"] (torch.save); a rank whose job
raises writes job["out"].error<rank> with the traceback (CheckpointException
derives from BaseException: caught as such) and goes on with the next job.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import consumers  # noqa: E402


def _checkpoint_manager(tt, model, opt, lrs, ts, scratch: Path, **config):
    cc = tt.config.Checkpoint(enable=True, folder="checkpoint", keep_latest_k=0, **config)
    return tt.checkpoint.CheckpointManager(
        dataloader=None, model_parts=[model], optimizers=opt, lr_schedulers=lrs,
        states={"train_state": ts}, checkpoint_config=cc, sd_adapter=None, base_folder=str(scratch))


def _objects(job: dict, tt, mesh):
    cfg = json.loads(Path(job["config"]).read_text())
    model = consumers.build_model(cfg, tt)
    if mesh is not None:
        consumers.apply_fsdp(model, mesh)
    opt = consumers.build_optimizer(model, tt)
    lrs = consumers.build_lr_scheduler(opt, tt)
    return model, opt, lrs, consumers.TrainState()


def load(job: dict, tt, mesh) -> dict:
    model, opt, lrs, ts = _objects(job, tt, mesh)
    scratch = Path(job["scratch"]) / f"rank{dist.get_rank()}"
    scratch.mkdir(parents=True, exist_ok=True)
    cm = _checkpoint_manager(tt, model, opt, lrs, ts, scratch, initial_load_path=job["dcp"],
                             initial_load_model_only=False, exclude_from_loading=["dataloader"])
    try:
        assert not (scratch / "checkpoint").exists()
        loaded = cm.load()
        assert loaded, "CheckpointManager.load() returned False (nothing loaded)"
        rep = consumers.report(model, opt, lrs, ts)
        rep["local_shapes"] = {fqn: tuple(p.to_local().shape) if hasattr(p, "to_local") else tuple(p.shape)
                               for fqn, p in model.named_parameters()}
        consumers.set_fixed_grads(model)
        opt.step()
        rep["stepped"] = {fqn: consumers.full(p) for fqn, p in model.named_parameters()}
        rep["world"] = dist.get_world_size()
        return rep
    finally:
        cm.close()


def save(job: dict, tt, mesh) -> dict:
    model, opt, lrs, ts = _objects(job, tt, mesh)
    consumers.set_fixed_grads(model)
    opt.step()
    lrs.step()
    ts.step, ts.ntokens_seen = 1, 64
    scratch = Path(job["scratch"])
    cm = _checkpoint_manager(tt, model, opt, lrs, ts, scratch, interval=1, last_save_model_only=False)
    try:
        cm.save(curr_step=1)
    finally:
        cm.close()
    return {"folder": str(scratch / "checkpoint" / "step-1")}


def run_jobs(jobs_file: str, job) -> None:
    """Every job of `jobs_file` in this process group (gloo; a 1-D CPU
    mesh when the world is larger than 1), one after another: `job(job,
    tt, mesh)` returns what rank 0 saves at the job's `out`; a failure is
    written beside it (`out.error<rank>`) for the test, and the next job
    runs."""
    jobs = json.loads(Path(jobs_file).read_text())
    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = None
    if world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh("cpu", (world,))
    tt = consumers.titan_modules()
    assert tt is not None, "TORCHTITAN_SRC is not set (or not a TorchTitan v0.2.2 source)"
    for spec in jobs:
        out = Path(spec["out"])
        try:
            res = job(spec, tt, mesh)
            if rank == 0:
                tmp = out.with_name(out.name + ".tmp")
                torch.save(res, tmp)
                os.replace(tmp, out)
        except BaseException:  # noqa: BLE001 - reported to the test, then the next job
            Path(f"{out}.error{rank}").write_text(traceback.format_exc())
        dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    run_jobs(sys.argv[1], lambda spec, tt, mesh: {"load": load, "save": save}[spec["kind"]](spec, tt, mesh))


if __name__ == "__main__":
    main()
