"""Deliberately broken folders, made with the reference converter, that the
judge must reject (test_harness.py): each is the correct TorchTitan state
dict of a tag with one mistake a converter could make.

`rejected_by`: the judgements that must fail on it ("a" dcp.load, "b"
TorchTitan's CheckpointManager in 1 process, "c" one AdamW step, "d" the
.metadata against TorchTitan's own); `passes`: those that cannot see the
mistake, and must not fail (which shows why the others are needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from expected import Expected


def _layers(sd: dict) -> list:
    return sorted({int(m[1]) for k in sd if (m := re.fullmatch(r"layers\.(\d+)\..*", k))})


def q_not_permuted(sd: dict, e: Expected) -> None:
    """wq (and its exp_avg, exp_avg_sq) in Hugging Face's row order."""
    for n in _layers(sd):
        fqn, hf = f"layers.{n}.attention.wq.weight", f"model.layers.{n}.self_attn.q_proj.weight"
        sd[fqn] = e.hf["params"][hf].clone()
        for kind in ("exp_avg", "exp_avg_sq"):
            sd["optimizer"][f"state.{fqn}.{kind}"] = e.hf[kind][hf].clone()


def moments_swapped(sd: dict, e: Expected) -> None:
    for fqn in e.params:
        o = sd["optimizer"]
        a, b = f"state.{fqn}.exp_avg", f"state.{fqn}.exp_avg_sq"
        o[a], o[b] = o[b], o[a]


def step_off_by_one(sd: dict, e: Expected) -> None:
    for fqn in e.params:
        sd["optimizer"][f"state.{fqn}.step"] = e.step_tensor() + 1


def master_ignored(sd: dict, e: Expected) -> None:
    """The bf16 model weights widened where the tag has fp32 master weights."""
    for fqn, t in e.params.items():
        sd[fqn] = t.bfloat16().float()


def params_stored_bf16(sd: dict, e: Expected) -> None:
    """Parameters stored as bfloat16 (values exact here: the tag's bf16 model
    widened). DCP upcasts them into the fp32 model without a word."""
    for fqn, t in e.params.items():
        sd[fqn] = t.bfloat16()


def no_initial_lr(sd: dict, e: Expected) -> None:
    for fqn in e.params:
        del sd["optimizer"][f"param_groups.{fqn}.initial_lr"]


def betas_list(sd: dict, e: Expected) -> None:
    for fqn in e.params:
        sd["optimizer"][f"param_groups.{fqn}.betas"] = list(e.param_group["betas"])


def lr_differs_on_one_parameter(sd: dict, e: Expected) -> None:
    """torch's flattened loader takes a group's values from its first
    parameter: only (a), which reads every parameter's items, can see it."""
    sd["optimizer"]["param_groups.norm.weight.lr"] = e.param_group["lr"] * 2


def dataloader_entry(sd: dict, e: Expected) -> None:
    """A `dataloader` item (what TorchTitan saves with no dataloader): the
    contract says none."""
    sd["dataloader"] = None


@dataclass(frozen=True)
class Variant:
    name: str
    tag: str  # tags.SPECS name
    edit: Callable
    rejected_by: frozenset
    passes: frozenset = field(default_factory=frozenset)


_F = frozenset
VARIANTS = [
    Variant("q-not-permuted", "tp1-dp1-fp32-pt-master", q_not_permuted, _F("abc"), _F("d")),
    Variant("exp-avg-and-exp-avg-sq-swapped", "tp2-pp2-dp3-fp32-pt-nomaster", moments_swapped, _F("abc"), _F("d")),
    Variant("step-off-by-one", "tp4-qkvlin-kv2-trn2-dp2-fp32-xser-master", step_off_by_one, _F("abc"), _F("d")),
    Variant("master-weights-ignored", "tp2-qkvlin-dp2-bf16-xser-master", master_ignored, _F("abc"), _F("d")),
    Variant("params-stored-bf16", "tp4-qkvfused-kv2-dp1-bf16-pt-nomaster-intstep", params_stored_bf16,
            _F("d"), _F("abc")),
    Variant("no-initial-lr", "tp1-dp1-fp32-pt-master", no_initial_lr, _F("abcd")),
    Variant("betas-a-list", "tp1-dp1-fp32-pt-master", betas_list, _F("ab"), _F("cd")),
    Variant("lr-differs-on-one-parameter", "tp1-dp1-fp32-pt-master", lr_differs_on_one_parameter, _F("a"),
            _F("bcd")),
    Variant("dataloader-entry", "tp1-dp1-fp32-pt-master", dataloader_entry, _F("d"), _F("abc")),
]
BY_NAME = {v.name: v for v in VARIANTS}
