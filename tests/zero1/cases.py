"""What the suite trains and reshards.

A `Run` is one training configuration: a layout, a DP size, the parameter
dtype, the optimizer's `step` kind, whether ZeRO-1 keeps master weights in
the checkpoint, and how the tag is saved. A `Case` reshards the tag of run A
into layout B at DP_B (plain or xser) and resumes there with the same
optimizer settings.

Coverage: TP 2->1, 1->2, 2->4 (qkv_linear, KV multiplier 2), DP 2->1, 1->4,
2->4, PP 1->2 and 2->1; plain and xser in and out; with and without master
weights (and xser with master weights and no model tensor data); fp32 and
bf16; q/k/v_proj, qkv_linear weight_q/k/v and fused weight_qkv on either
side; trn2 head order; tensor and int `step`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reference import Layout

STEPS = 3  # training steps before the tag is saved
SEED = 0


@dataclass(frozen=True)
class Run:
    layout: Layout
    dp: int
    dtype: str = "float32"
    opt: str = "tensor"  # optimizers.OPTIMIZERS: the kind of `step`
    master: bool = True  # save_master_weights (use_master_weights_in_ckpt)
    xser: bool = False
    avoid_lower: bool = False  # avoid_saving_lower_precision_weights

    @property
    def id(self) -> str:
        lay = self.layout
        s = f"tp{lay.tp}pp{lay.pp}"
        if lay.qkv_linear:
            s += "-qkv" + ("fused" if lay.fuse_qkv else "") + (f"-kv{lay.kv_mult}" if lay.kv_mult > 1 else "")
        if lay.backend != "trn1":
            s += "-" + lay.backend
        s += f"-dp{self.dp}-{'bf16' if self.dtype == 'bfloat16' else 'fp32'}-{self.opt}step"
        s += "-master" if self.master else "-nomaster"
        s += "-xser" if self.xser else "-pt"
        return s + ("-nomodeldata" if self.avoid_lower else "")

    def job(self, kind: str, tag, out) -> dict:
        lay = self.layout
        return {
            "kind": kind, "tag": str(tag), "out": str(out), "seed": SEED, "steps": STEPS,
            "layout": dict(tp=lay.tp, pp=lay.pp, vpp=lay.vpp, kv_mult=lay.kv_mult,
                           qkv_linear=lay.qkv_linear, fuse_qkv=lay.fuse_qkv, backend=lay.backend),
            "dtype": self.dtype, "opt": self.opt, "master": self.master,
            "xser": self.xser, "avoid_lower": self.avoid_lower,
        }


@dataclass(frozen=True)
class Case:
    name: str
    a: Run
    layout: Layout  # B
    dp: int  # B
    xser: bool  # B's format

    @property
    def b(self) -> Run:
        return replace(self.a, layout=self.layout, dp=self.dp, xser=self.xser, avoid_lower=False)

    @property
    def same_dp(self) -> bool:
        return self.a.dp == self.dp


TP2 = Run(Layout(tp=2), dp=2)
TP1_XSER = Run(Layout(), dp=2, master=False, xser=True)
TP2_QKV_INT = Run(Layout(tp=2, qkv_linear=True), dp=1, opt="int")
PP2_BF16 = Run(Layout(pp=2), dp=2, dtype="bfloat16", xser=True, avoid_lower=True)
FUSED_BF16 = Run(Layout(tp=2, pp=2, qkv_linear=True, fuse_qkv=True), dp=2, dtype="bfloat16", opt="int",
                 master=False)
TP4_TRN2 = Run(Layout(tp=4, qkv_linear=True, kv_mult=2, backend="trn2"), dp=1, opt="int", xser=True)

RUNS = [TP2, TP1_XSER, TP2_QKV_INT, PP2_BF16, FUSED_BF16, TP4_TRN2]

CASES = [
    Case("tp2-to-tp1", TP2, Layout(), 2, False),
    Case("dp2-to-dp1", TP2, Layout(tp=2), 1, False),
    Case("pp1-to-pp2-fused-xser", TP2, Layout(tp=2, pp=2, qkv_linear=True, fuse_qkv=True), 2, True),
    Case("tp1-to-tp2-nomaster", TP1_XSER, Layout(tp=2), 2, True),
    Case("xser-to-pt-same-layout", TP1_XSER, Layout(), 2, False),
    Case("tp2-to-tp4-kv2-intstep", TP2_QKV_INT, Layout(tp=4, qkv_linear=True, kv_mult=2), 1, False),
    Case("dp1-to-dp4-intstep", TP2_QKV_INT, Layout(tp=2, qkv_linear=True), 4, False),
    Case("pp2-to-pp1-bf16-nomodeldata", PP2_BF16, Layout(), 2, True),
    Case("pp2-to-tp2-dp4-bf16-pt", PP2_BF16, Layout(tp=2), 4, False),
    Case("fused-tp2pp2-to-tp1-dp1-bf16", FUSED_BF16, Layout(), 1, False),
    Case("trn2-tp4-to-trn1-tp2-dp2", TP4_TRN2, Layout(tp=2, qkv_linear=True), 2, True),
]
