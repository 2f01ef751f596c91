"""Checks of the judge itself (they run whatever is judged; no binary needed):

- expected.py recovers the Hugging Face-level state each tag was made from
  (optimizer_tags.TrainingState's weights, exp_avg, exp_avg_sq, step), from
  the files alone;
- the restated q/k permutation and names are TorchTitan's adapter's;
- TorchTitan's model built from a config has the config's shapes;
- the judgements reject deliberately broken folders (variants.py), each by
  the judgements that can see the mistake, and the others pass them.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

import consumers
import expected
import judge
import tags
import variants
from reference import Dims

SPECS = [s.name for s in tags.SPECS]


@pytest.mark.parametrize("spec", SPECS)
def test_expected_recovers_the_state_the_tag_was_made_from(store, spec):
    t = store.tag(spec)
    e = store.expected(spec)
    st = t.state
    model_dtype = torch.bfloat16 if t.spec.layout.dtype == "bfloat16" else torch.float32
    assert e.master == t.spec.master
    for k, w in st.weights.items():
        want = w if t.spec.master else w.to(model_dtype).float()
        judge.assert_bitwise(e.hf["params"][k], want, f"expected params {k}")
        judge.assert_bitwise(e.hf["exp_avg"][k], st.exp_avg[k], f"expected exp_avg {k}")
        judge.assert_bitwise(e.hf["exp_avg_sq"][k], st.exp_avg_sq[k], f"expected exp_avg_sq {k}")
    if t.spec.layout.dtype == "bfloat16" and t.spec.master:
        # the tag's master weights are not its bf16 model widened: taking the wrong one would show
        differ = sum(int((st.weights[k] != st.weights[k].bfloat16().float()).sum()) for k in st.weights)
        assert differ > 0.9 * sum(w.numel() for w in st.weights.values())
    assert e.step == 7 and type(e.step) is (int if t.spec.int_step else float)
    assert e.train_state == {"step": 7, "ntokens_seen": 0}
    assert e.param_group["betas"] == tuple(tags.HYPER["betas"]) and e.param_group["lr"] == tags.HYPER["lr"]
    assert e.param_group["weight_decay"] == tags.HYPER["weight_decay"] and e.param_group["initial_lr"] == 1e-3
    assert list(e.param_group) == ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach",
                                   "capturable", "differentiable", "fused", "decoupled_weight_decay", "initial_lr"]


@pytest.mark.parametrize("spec", SPECS)
def test_infer_layout(store, spec):
    """make_reference_dcp.py's command line reads the layout from the files."""
    t = store.tag(spec)
    got = expected.infer_layout(t.path, t.cfg, t.spec.layout.backend)
    assert got == dataclasses.replace(t.spec.layout, dtype=None)


@pytest.mark.titan
@pytest.mark.parametrize("which", ["suite", "zero1"])
def test_restated_permutation_is_the_adapters(tt, which):
    cfg = tags.CONFIG if which == "suite" else tags.zero1_config()
    d = Dims.from_config(cfg)
    g = torch.Generator().manual_seed(7)
    hf = {k: torch.randn(shape, generator=g) for k, shape in expected.hf_shapes(d).items()}
    mine = expected.restated_from_hf(hf, cfg)
    theirs = expected.adapter_from_hf(hf, cfg, tt)
    assert list(mine) == list(theirs)
    for k in theirs:
        judge.assert_bitwise(mine[k], theirs[k], f"restated from_hf {k}")
    # and TorchTitan's to_hf (Hugging Face's own permute) takes it back
    back = tt.Adapter(tt.ModelArgs(**expected.titan_model_args(cfg)), None).to_hf(dict(mine))
    for k in hf:
        judge.assert_bitwise(back[k].contiguous(), hf[k], f"to_hf(from_hf) {k}")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(mine["layers.0.attention.wq.weight"], hf[q]), "the permutation must move rows"


@pytest.mark.titan
@pytest.mark.parametrize("which", ["suite", "zero1"])
def test_titan_model_has_the_configs_shapes(tt, which):
    cfg = tags.CONFIG if which == "suite" else tags.zero1_config()
    shapes = expected.hf_shapes(Dims.from_config(cfg))
    titan_shapes = {k: tuple(v.shape) for k, v in expected.restated_from_hf(
        {k: torch.empty(s) for k, s in shapes.items()}, cfg).items()}
    model = consumers.build_model(cfg, tt)
    assert {k: tuple(p.shape) for k, p in model.named_parameters()} == titan_shapes
    assert {k: tuple(p.shape) for k, p in consumers.PlainTransformer(cfg).named_parameters()} == titan_shapes


# ---------------------------------------------------------------------------
# broken folders


def _cases():
    for v in variants.VARIANTS:
        for j in sorted(v.rejected_by | v.passes):
            marks = [pytest.mark.titan] if j in "bd" else []
            verdict = "rejected" if j in v.rejected_by else "passes"
            yield pytest.param(v.name, j, marks=marks, id=f"{v.name}-{j}-{verdict}")


def _judge(store, tt, name: str, letter: str) -> None:
    v = variants.BY_NAME[name]
    folder, e = store.variant(name), store.expected(v.tag)
    if letter == "a":
        judge.judge_dcp_load(folder, e, tt)
    elif letter == "b":
        judge.judge_titan_report(store.titan_report(v.tag, 1, name), e, store.reference_step(v.tag),
                                 "CheckpointManager.load (1 process)")
    elif letter == "c":
        judge.judge_step(folder, e, store.reference_step(v.tag), tt)
    else:
        judge.judge_metadata(folder, store.yardstick())


SAYS = {  # what a rejection must name
    "q-not-permuted": r"wq",
    "exp-avg-and-exp-avg-sq-swapped": r"exp_avg|after one AdamW step",
    "step-off-by-one": r"\.step|after one AdamW step",
    "master-weights-ignored": r"weight",
    "params-stored-bf16": r"dtype torch\.bfloat16",
    "no-initial-lr": r"initial_lr",
    "betas-a-list": r"betas",
    "lr-differs-on-one-parameter": r"norm\.weight\.lr",
    "dataloader-entry": r"dataloader",
}


@pytest.mark.parametrize("variant,judge_letter", list(_cases()))
def test_broken_folder(store, tt, variant, judge_letter, request):
    v = variants.BY_NAME[variant]
    if judge_letter in v.rejected_by:
        with pytest.raises(AssertionError, match=SAYS[variant]):
            _judge(store, tt, variant, judge_letter)
    else:
        _judge(store, tt, variant, judge_letter)


def test_expected_reads_trainer_ordered_tags(store, tmp_path):
    """Real tags order a rank file's keys as the trainer's named_parameters()
    (a fused weight_qkv before o_proj), and so number the optimizer's
    parameters: tests/zero1's reference resharder writes such a tag (here
    TP 2 PP 2 fused, DP 3, xser) from one of this suite's; expected.py must
    find the same state in both."""
    zero1 = str(expected.HERE.parent / "zero1")
    if zero1 not in sys.path:
        sys.path.append(zero1)
    import reference_zero1
    from reference import Layout

    spec = "tp2-qkvlin-dp2-bf16-xser-master"
    t, a = store.tag(spec), store.expected(spec)
    lay_b = Layout(tp=2, pp=2, qkv_linear=True, fuse_qkv=True)
    reference_zero1.reshard(t.path, tmp_path / "b", t.cfg, dataclasses.replace(t.spec.layout, dtype=None), lay_b, 3,
                            xser=True)
    b = expected.expect(tmp_path / "b", t.cfg, lay_b)
    for kind in ("params", "exp_avg", "exp_avg_sq"):
        for k in getattr(a, kind):
            judge.assert_bitwise(getattr(b, kind)[k], getattr(a, kind)[k], f"{kind} {k}")
    for item in ("step", "param_group", "lr_scheduler", "train_state"):
        assert getattr(b, item) == getattr(a, item), item


@pytest.mark.titan
def test_torchtitan_saves_initial_lr_as_the_schedulers_base_lr(yardstick):
    """The rule expected.py applies when the tag's groups have no initial_lr:
    TorchTitan's own save (one step into a 4-step warmup) holds the group's
    initial_lr = the scheduler's base_lrs[0] (torch's LRScheduler sets
    both from the group's lr when it is built), not the current lr."""
    import torch.distributed.checkpoint as dcp

    sd = {"optimizer": {"param_groups.norm.weight.initial_lr": None, "param_groups.norm.weight.lr": None},
          "lr_scheduler": {"base_lrs": None}}
    dcp.load(sd, checkpoint_id=str(yardstick))
    initial, lr = sd["optimizer"]["param_groups.norm.weight.initial_lr"], sd["optimizer"]["param_groups.norm.weight.lr"]
    assert initial == sd["lr_scheduler"]["base_lrs"][0] and initial != lr, sd
