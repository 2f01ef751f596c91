"""NxD's examples' two optimizer parameter groups (tp_zero1_llama_hf_pretrain.py):
the parameters whose name holds one of NO_DECAY get weight_decay 0.0, the
others the run's; the optimizer numbers the parameters group by group, each
group in the model's order. The one statement of the grouping for every
suite (tests/compat's tags, tests/zero1's run and reference, tests/dcp's
expectations).
"""

from __future__ import annotations

NO_DECAY = ("bias", "norm")


def decays(name: str) -> bool:
    """Whether the parameter `name` is in the decay group (group 0)."""
    return not any(nd in name for nd in NO_DECAY)


def group_order(names) -> list:
    """Optimizer index -> parameter name: group 0's names, then group 1's,
    each in the order given (the model's named_parameters() order)."""
    names = list(names)
    return [n for n in names if decays(n)] + [n for n in names if not decays(n)]


def group_sizes(names) -> list:
    """[parameters in the decay group, parameters in the no-decay group]."""
    names = list(names)
    decay = sum(1 for n in names if decays(n))
    return [decay, len(names) - decay]


def param_groups(named, weight_decay: float) -> list:
    """The two groups over (name, parameter) pairs, as torch optimizers take them."""
    named = list(named)
    return [{"params": [p for n, p in named if decays(n)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0}]
