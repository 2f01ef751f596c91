"""The optimizers of the simulated NxD run: the examples' parameter groups,
torch_xla's ZeroRedundancyOptimizer around an AdamW, and an AdamW whose
`step` is a Python int.

The `step` entry of the optimizer state is a 0-d fp32 tensor with
torch.optim.AdamW ("tensor" kind) and a Python int with NxD's
AdamW_FP32OptimParams and transformers' AdamW ("int" kind). NxD's class
imports transformers, so the int kind is IntStepAdamW below: the same
update as AdamW_FP32OptimParams (utils/adamw_fp32_optim_params.py) with
XLA_DOWNCAST_BF16 unset, state initialised in the same key order.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compat"))
import decay_groups  # noqa: E402

HYPER = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
WARMUP = 10


def param_groups(named: list) -> list:
    """The examples' two groups over named_parameters() (name, param) pairs."""
    return decay_groups.param_groups(named, HYPER["weight_decay"])


class IntStepAdamW(torch.optim.Optimizer):
    """AdamW_FP32OptimParams (and transformers' AdamW): state['step'] is an int."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                 correct_bias=True, no_deprecation_warning=True, differentiable=False, capturable=False):
        # NxD's signature and defaults: ZeroRedundancyOptimizer.load_state_dict
        # rebuilds the base optimizer with its `defaults`, to which
        # torch.optim.Optimizer.__setstate__ has added differentiable=False.
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      correct_bias=correct_bias, capturable=capturable))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    step_size = step_size * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return None


OPTIMIZERS = {"tensor": torch.optim.AdamW, "int": IntStepAdamW}


def zero1(named: list, kind: str, dp: int, master: bool):
    """ZeroRedundancyOptimizer over one (tp, pp) rank's parameters, sharded
    over all DP ranks. grad_clipping is off: NxD clips by a norm over the
    whole TP/PP group, which a per-rank optimizer cannot reproduce (clipping
    does not change what the files hold)."""
    from torch_xla.distributed.zero_redundancy_optimizer import ZeroRedundancyOptimizer

    return ZeroRedundancyOptimizer(
        param_groups(named), OPTIMIZERS[kind], grad_clipping=False,
        sharding_groups=[list(range(dp))], grad_norm_groups=None,
        save_master_weights=master, **HYPER)


def warmup(step: int) -> float:
    """LambdaLR's factor: linear warmup (a plain function, so the scheduler's
    state_dict holds None in its place)."""
    return min(1.0, (step + 1) / WARMUP)


def scheduler(opt):
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup)
