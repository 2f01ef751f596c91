"""(c) One AdamW step with a fixed gradient per parameter, on a model and
optimizer loaded from the folder as TorchTitan's CheckpointManager loads them
(dcp.load of its Stateful OptimizersContainer and LRSchedulersContainer and
the model's tensors; without TORCHTITAN_SRC a plain module, torch AdamW and
set_optimizer_state_dict), gives bit for bit the parameters of a plain
torch.optim.AdamW continued from expected.py's state with the same
hyper-parameters. Both are torch's for-loop AdamW on CPU: no tolerance."""

from __future__ import annotations

import pytest

import judge
import tags

SPECS = [s.name for s in tags.SPECS]


@pytest.mark.parametrize("spec", SPECS)
def test_one_adamw_step(store, tt, spec):
    judge.judge_step(store.folder(spec), store.expected(spec), store.reference_step(spec), tt)
