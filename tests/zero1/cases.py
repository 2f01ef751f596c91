"""What the suite trains and reshards.

A `Run` is one training configuration: a layout, a DP size, the parameter
dtype, the optimizer's `step` kind, whether ZeRO-1 keeps master weights in
the checkpoint, and how the tag is saved. A `Case` reshards the tag of run A
into layout B at DP_B (plain or xser) and resumes there with the same
optimizer settings.

Coverage: TP 2->1, 1->2, 2->4 (qkv_linear, KV multiplier 2), DP 2->1, 1->4,
2->4, PP 1->2 and 2->1; plain and xser in and out; with and without master
weights (and xser with master weights and no model tensor data); fp32 and
bf16, and bf16 with float32 norms; q/k/v_proj, qkv_linear weight_q/k/v and
fused weight_qkv on either side; trn2 head order; qkv_linear with KV
multiplier 1 and fewer TP ranks than KV heads (TP 1; TP 2 of the kv4 model)
out and in; tensor and int `step`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

import tiny_llama
from reference import Dims, Layout

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
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
    model: str = "base"  # tiny_llama.MODELS
    norms: Optional[str] = None  # the norms' dtype when not the run's ("float32" in a bf16 run, as NxD's)

    @property
    def config(self) -> dict:
        return tiny_llama.MODELS[self.model]

    @property
    def hf_config(self) -> dict:
        """The config.json the resharders are given: the model's (torch_dtype
        float32, whatever the run's dtype: the model files, not the config,
        say it), but a run keeping its norms in another dtype names its own
        dtype there, as a bf16 model's config does, so that only the tag can
        tell the norms are float32."""
        return {**self.config, "torch_dtype": self.dtype} if self.norms else self.config

    @property
    def dims(self) -> Dims:
        return tiny_llama.dims(self.config)

    def init_state(self, seed: int):
        """The run's seeded Hugging Face weights, in its dtypes."""
        return tiny_llama.init_state(self.dims, seed, DTYPES[self.dtype], DTYPES[self.norms] if self.norms else None)

    @property
    def id(self) -> str:
        lay = self.layout
        s = ("" if self.model == "base" else self.model + "-") + f"tp{lay.tp}pp{lay.pp}"
        if lay.qkv_linear:
            s += "-qkv" + ("fused" if lay.fuse_qkv else "") + (f"-kv{lay.kv_mult}" if lay.kv_mult > 1 else "")
        if lay.backend != "trn1":
            s += "-" + lay.backend
        s += f"-dp{self.dp}-{'bf16' if self.dtype == 'bfloat16' else 'fp32'}-{self.opt}step"
        s += f"-norms{'bf16' if self.norms == 'bfloat16' else 'fp32'}" if self.norms else ""
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
            "xser": self.xser, "avoid_lower": self.avoid_lower, "model": self.model, "norms": self.norms,
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
# The layouts NxD's trainer (GQAQKVColumnParallelLinear) trains in with
# qkv_linear and KV multiplier 1 where its converter refuses them (T < Hkv):
# TP 1 (2 KV heads on the one rank), as a bf16 run keeping its norms float32;
# TP 2 of the kv4 model (KV heads 2r, 2r+1 and Q heads 4r..4r+3 on rank r).
TP1_QKV_BF16 = Run(Layout(qkv_linear=True), dp=2, dtype="bfloat16", norms="float32")
KV4_TP2_QKV = Run(Layout(tp=2, qkv_linear=True), dp=1, opt="int", xser=True, model="kv4")

RUNS = [TP2, TP1_XSER, TP2_QKV_INT, PP2_BF16, FUSED_BF16, TP4_TRN2, TP1_QKV_BF16, KV4_TP2_QKV]

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
    Case("qkv-tp1-bf16-fp32norms-to-qkv-tp2", TP1_QKV_BF16, Layout(tp=2, qkv_linear=True), 2, False),
    Case("tp2-to-qkv-tp1-xser", TP2, Layout(qkv_linear=True), 2, True),
    Case("kv4-qkv-tp2-to-qkv-fused-tp1", KV4_TP2_QKV, Layout(qkv_linear=True, fuse_qkv=True), 1, False),
    Case("kv4-qkv-tp2-to-qkv-fused-tp2", KV4_TP2_QKV, Layout(tp=2, qkv_linear=True, fuse_qkv=True), 1, True),
]
