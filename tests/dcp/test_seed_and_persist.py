"""A Hugging Face model as a seed checkpoint (`--format dcp` writes the
model alone, in float32, under TorchTitan's names), loaded into TorchTitan's
Llama3 (or a plain module of its names); and `mount --persist-to` leaving a
DCP folder on real storage, `.metadata` last, that loads and verifies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

import consumers
import expected
import judge

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/tiny-llama"


def _shardfs(store):
    if store.mode != "shardfs":
        pytest.skip("the reference converter takes NxD tags only")
    return store.shardfs


def test_a_hugging_face_model_becomes_a_seed_checkpoint(store, tt, tmp_path):
    shardfs = _shardfs(store)
    out = tmp_path / "seed"
    run = shardfs.run("convert", EXAMPLE, out, "--format", "dcp", "--dcp-shards", "3")
    assert run.returncode == 0, run.describe()
    cfg = json.loads((EXAMPLE / "config.json").read_text())
    hf = {}
    for f in sorted(EXAMPLE.glob("*.safetensors")):
        hf.update(load_file(f))
    want = expected.adapter_from_hf({k: v.float() for k, v in hf.items()}, cfg, tt) if tt else \
        expected.restated_from_hf({k: v.float() for k, v in hf.items()}, cfg)
    model = consumers.build_model(cfg, tt)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if k in want}
    assert sorted(sd) == sorted(want), f"the model's parameters are not the seed's: {sorted(set(sd) ^ set(want))}"
    dcp.load(sd, checkpoint_id=str(out))
    for k, v in want.items():
        judge.assert_bitwise(sd[k], v, f"seed {k}")
    meta = judge.read_metadata(out)
    assert sorted(meta.state_dict_metadata) == sorted(want), "a seed checkpoint holds the model alone"
    assert all(m.properties.dtype == torch.float32 for m in meta.state_dict_metadata.values())


@pytest.mark.mount
def test_persist_to_leaves_a_folder_that_loads_metadata_last(store, tt, tmp_path):
    shardfs = _shardfs(store)
    from mounting import Mounts, require_fuse

    require_fuse(shardfs)
    spec = "tp2-qkvlin-dp2-bf16-xser-master"
    t = store.tag(spec)
    e = store.expected(spec)
    mounts = Mounts(shardfs, tmp_path)
    mnt, persisted = tmp_path / "mnt", tmp_path / "persisted"
    mnt.mkdir()
    try:
        mounts.mount(t.path, mnt, "--format", "dcp", "--config", t.config, *t.spec.source_args,
                     "--persist-to", persisted)
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            run = shardfs.run("status", mnt, "--json")
            assert run.returncode == 0, run.describe()
            state = (json.loads(run.stdout).get("persist") or {}).get("state")
            if state in ("done", "failed"):
                break
            time.sleep(0.2)
        assert state == "done", f"persisting ended {state}: {run.stdout}"
    finally:
        mounts.cleanup()
    assert not mounts.problems, "\n".join(mounts.problems)
    files = [p for p in persisted.iterdir() if p.is_file()]
    assert (persisted / ".metadata").is_file(), sorted(p.name for p in files)
    newest = max((p for p in files if p.name != ".metadata"), key=lambda p: p.stat().st_mtime_ns)
    assert (persisted / ".metadata").stat().st_mtime_ns >= newest.stat().st_mtime_ns, ".metadata must be written last"
    judge.judge_dcp_load(persisted, e, tt)
    run = shardfs.run("verify", t.path, persisted, "--config", t.config, *t.spec.source_args, "--format", "dcp")
    assert run.returncode == 0, run.describe()


def test_a_tied_model_seeds_an_output_layer_of_its_own(store, tmp_path):
    """TorchTitan's Llama3 has no tied embedding: the seed's output.weight
    is a copy of the embedding (the same model)."""
    shardfs = _shardfs(store)
    tied = tmp_path / "tied"
    tied.mkdir()
    cfg = json.loads((EXAMPLE / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (tied / "config.json").write_text(json.dumps(cfg))
    hf = {}
    for f in sorted(EXAMPLE.glob("*.safetensors")):
        hf.update(load_file(f))
    hf.pop("lm_head.weight")
    from safetensors.torch import save_file
    save_file(hf, str(tied / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "seed"
    run = shardfs.run("convert", tied, out, "--format", "dcp")
    assert run.returncode == 0, run.describe()
    meta = judge.read_metadata(out)
    sd = {k: torch.zeros(tuple(v.size)) for k, v in meta.state_dict_metadata.items()}
    dcp.load(sd, checkpoint_id=str(out))
    judge.assert_bitwise(sd["output.weight"], hf["model.embed_tokens.weight"].float(), "output.weight of a tied model")
