"""(b) TorchTitan's own CheckpointManager loads the folder as a run's
`checkpoint.initial_load_path` (initial_load_model_only=False,
exclude_from_loading=["dataloader"]), in a 1-process and a 2-process gloo
group (FSDP2 units as TorchTitan's apply_fsdp: tok_embeddings, each block,
[norm, output], the root); the parameters and optimizer state, gathered to
full tensors, bitwise equal to expected.py's; the optimizer's one param
group, the LR scheduler's state and the train state restored; and (c) one
AdamW step after it equal to a plain AdamW's step from expected.py's state."""

from __future__ import annotations

import pytest

import judge
import tags

SPECS = [s.name for s in tags.SPECS]
WORLDS = [pytest.param(1, id="1proc"), pytest.param(2, id="2proc-fsdp2", marks=pytest.mark.slow)]


@pytest.mark.titan
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("spec", SPECS)
def test_checkpoint_manager_resumes(store, spec, world):
    rep = store.titan_report(spec, world)
    what = f"CheckpointManager.load ({world} process{'es, FSDP2' if world > 1 else ''})"
    assert rep["world"] == world
    judge.judge_titan_report(rep, store.expected(spec), store.reference_step(spec), what)
    if world > 1:
        full = {k: tuple(v.shape) for k, v in rep["params"].items()}
        unsharded = [k for k, shape in rep["local_shapes"].items() if shape == full[k]]
        assert not unsharded, f"{what}: not sharded by FSDP2: {unsharded}"
