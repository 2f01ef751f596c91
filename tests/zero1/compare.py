"""How the judge compares: training results (the state loaded, the loss,
the state after one step) within the tolerance the two runs allow, and two
tags' files exactly (structure, types, tensors bit for bit).

Tolerances (`check_results`; lr is the step's learning rate, 5e-3 here, and
one AdamW step moves an element by up to about lr):
- The loaded state (parameters and fp32 master shards before the step) is
  always compared EXACTLY: resharding only moves values.
- The same DP size on both sides: everything EXACT. Every layout trains the
  same Hugging Face tensors on the same tokens per DP rank (the forward runs
  on the assembled tensors), gradients reach the pieces by copying and AdamW
  works element by element, so a correct reshard changes no bit, in fp32
  and bf16 alike, however TP and PP change. (This holds because every
  worker compiles at the same XLA optimisation level: worker.py.)
- Another DP size, fp32: the gradient of the same global batch is summed in
  another order (per-rank means, then the scaled reduce-scatter): a few
  1e-7 relative. After the step: |b - a| <= 1e-6 |a| + 1e-4 lr (measured:
  at most one fp32 rounding, 6e-8, which is 1.5e-5 lr); the loss within
  1e-6 relative (measured 5e-8).
- Another DP size, bf16: each DP rank rounds its gradient to bf16 and the
  reduce-scatter sums bf16 values, so where partial gradients cancel the
  gradient differs far more than a bf16 rounding and one AdamW step differs
  by up to a few percent of lr (measured: 3e-2 lr at DP 2 -> 4). So the
  master weights: |b - a| <= 0.1 lr per element and the two steps' updates
  within 2% of each other in L2 norm (measured 1.5e-3); the bf16 parameters:
  one bf16 ulp plus 0.1 lr (they are the master weights rounded); the loss
  within 1e-3 relative (measured 3e-8: the forward of a sequence is the same
  at either DP size).
A reshard that loses, misplaces or mis-scales state moves elements by about
a whole update (~lr), or the update's L2 norm by several percent (a
`step` off by one: 7%).
"""

from __future__ import annotations

import math

import torch

FP32_RTOL, FP32_LR_ATOL = 1e-6, 1e-4
BF16_LR_ATOL, BF16_UPDATE_L2 = 0.1, 0.02
BF16_LOSS_RTOL = 1e-3


def _bf16_ulp(t: torch.Tensor) -> torch.Tensor:
    """One unit in the last place of bf16 values (8 significant bits)."""
    a = t.float().abs().clamp_min(2.0 ** -126)
    return torch.exp2(torch.floor(torch.log2(a)) - 7)


def _exact(name: str, x: torch.Tensor, y: torch.Tensor) -> list:
    if x.dtype != y.dtype or x.shape != y.shape:
        return [f"{name}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"]
    if torch.equal(x, y):
        return []
    return [f"{name}: {int((x != y).sum())} of {x.numel()} elements differ "
            f"(max |diff| {float((x.double() - y.double()).abs().max()):.3g})"]


def _within(name: str, a: torch.Tensor, b: torch.Tensor, bound: torch.Tensor) -> list:
    excess = (b.double() - a.double()).abs() - bound.double()
    i = int(excess.argmax())
    if float(excess.reshape(-1)[i]) <= 0:
        return []
    x, y = float(a.reshape(-1)[i]), float(b.reshape(-1)[i])
    return [f"{name}[{i}]: {x!r} vs {y!r} (|diff| {abs(y - x):.3g}, allowed {float(bound.reshape(-1)[i]):.3g})"]


def check_results(a: dict, b: dict, *, exact: bool, dtype: str) -> list:
    """Differences beyond the tolerance between result a (continuing in
    layout A) and b (resumed in layout B): a list of messages, empty when
    they agree."""
    bad = []
    for what in ("params_before", "masters_before"):
        assert list(a[what]) == list(b[what])
        for k in a[what]:
            bad += _exact(f"{what} {k}", a[what][k], b[what][k])
    lr = max(a["step_lrs"])
    if exact:
        if a["loss"] != b["loss"] or a["rank_losses"] != b["rank_losses"]:
            bad.append(f"loss {a['loss']!r} vs {b['loss']!r} (rank losses {a['rank_losses']} vs {b['rank_losses']})")
        for what in ("params", "masters"):
            for k in a[what]:
                bad += _exact(f"{what} {k}", a[what][k], b[what][k])
    else:
        rtol = FP32_RTOL if dtype == "float32" else BF16_LOSS_RTOL
        if not math.isclose(a["loss"], b["loss"], rel_tol=rtol, abs_tol=0.0):
            bad.append(f"loss {a['loss']!r} vs {b['loss']!r} (rel tol {rtol})")
        for what in ("params", "masters"):
            for k, x in a[what].items():
                y = b[what][k]
                if x.dtype != y.dtype or x.shape != y.shape:
                    bad.append(f"{what} {k}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
                elif dtype == "float32":
                    bad += _within(f"{what} {k}", x, y, FP32_RTOL * x.abs() + FP32_LR_ATOL * lr)
                elif x.dtype == torch.bfloat16:
                    bad += _within(f"{what} {k}", x, y, _bf16_ulp(x) + BF16_LR_ATOL * lr)
                else:
                    bad += _within(f"{what} {k}", x, y, torch.full_like(x, BF16_LR_ATOL * lr))
        if dtype != "float32":
            ratio = update_l2(a, b)
            if ratio > BF16_UPDATE_L2:
                bad.append(f"the updates differ by {ratio:.3g} of their L2 norm (allowed {BF16_UPDATE_L2})")
    for what in ("step_lrs", "lrs", "scheduler"):
        if a[what] != b[what]:
            bad.append(f"{what}: {a[what]} vs {b[what]}")
    return bad


def update_l2(a: dict, b: dict) -> float:
    """||update_b - update_a|| / ||update_a|| over all master weights."""
    da = torch.cat([(a["masters"][k].double() - a["masters_before"][k].double()).reshape(-1) for k in a["masters"]])
    db = torch.cat([(b["masters"][k].double() - b["masters_before"][k].double()).reshape(-1) for k in b["masters"]])
    return float((db - da).norm() / da.norm())


def max_diff(a: dict, b: dict, what: str) -> float:
    return max(float((a[what][k].double() - b[what][k].double()).abs().max()) for k in a[what])


# ---------------------------------------------------------------------------
# files


def same_object(x, y, where: str = "") -> list:
    """Exact equality of two loaded objects: the same types (dict vs
    OrderedDict, list vs tuple, int vs tensor), keys in the same order,
    tensors of the same dtype, shape and bits. -> list of differences."""
    if type(x) is not type(y):
        return [f"{where}: {type(x).__name__} vs {type(y).__name__}"]
    if isinstance(x, torch.Tensor):
        if x.dtype != y.dtype or x.shape != y.shape:
            return [f"{where}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"]
        if not torch.equal(x.reshape(-1).contiguous().view(torch.uint8), y.reshape(-1).contiguous().view(torch.uint8)):
            return [f"{where}: tensor bits differ"]
        return []
    if isinstance(x, dict):
        if list(x) != list(y):
            return [f"{where}: keys {list(x)} vs {list(y)}"]
        return [d for k in x for d in same_object(x[k], y[k], f"{where}[{k!r}]")]
    if isinstance(x, (list, tuple)):
        if len(x) != len(y):
            return [f"{where}: length {len(x)} vs {len(y)}"]
        return [d for i, (u, v) in enumerate(zip(x, y)) for d in same_object(u, v, f"{where}[{i}]")]
    if hasattr(x, "__dict__") and not isinstance(x, (int, float, str, bool)):
        return same_object(vars(x), vars(y), f"{where}.__dict__")
    if x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
        return [f"{where}: {x!r} vs {y!r}"]
    return []
