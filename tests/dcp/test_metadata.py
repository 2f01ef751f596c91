"""(d) The folder's `.metadata` holds what a folder saved by TorchTitan's own
CheckpointManager for the same model holds (its `dataloader` entry aside):
the same keys, kinds, tensor properties, sizes and planner paths, nothing
more; chunks that tile every tensor; every item in a `.distcp` file of the
folder. DCP upcasts a bf16-stored tensor into an fp32 model without a word,
so only this test sees a wrong stored dtype."""

from __future__ import annotations

import pytest

import judge
import tags

SPECS = [s.name for s in tags.SPECS]


@pytest.mark.titan
@pytest.mark.parametrize("spec", SPECS)
def test_metadata_matches_torchtitans(store, yardstick, spec):
    judge.judge_metadata(store.folder(spec), yardstick)


@pytest.mark.titan
def test_metadata_of_several_files(store, yardstick):
    judge.judge_metadata(store.folder("tp2-pp2-dp3-fp32-pt-nomaster", shards=3), yardstick, shards=3)
