"""Rank pieces of a layout, as the NxD trainer holds them, and the map back to
Hugging Face tensors.

`trainer_state(sd, d, lay, tp, pp)`: reference.rank_state's tensors under the
trainer's key names in the trainer's order (the named_parameters() order of
NxD's training Llama, modeling_llama_nxd.py: per layer the qkv projection
first, then o_proj, gate_up_proj, down_proj and the two norms; a fused
`weight_qkv` therefore sits where reference.rank_state's q would be, not at
the end of the file as NxD's converter writes it).

`PieceMap(d, lay)` learns, for every element of every rank piece, which
Hugging Face element it holds, by pushing element numbers through
reference.rank_state (each Hugging Face tensor replaced by the numbers of its
elements). With that:
- `assemble` builds the Hugging Face tensors from the pieces, taking for each
  element the first piece holding it (TP rank 0's copy of a norm, the first
  copy of a KV head replicated under a KV multiplier);
- `Gather` does the same inside autograd for the training forward, and its
  backward gives EVERY piece element holding a Hugging Face element that
  element's full gradient: replicas receive identical gradients, as in NxD,
  where the gradients of replicated parameters are all-reduced across the
  TP group.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from reference import Dims, Layout, hf_shapes, rank_state


def trainer_order(keys: list) -> list:
    """rank_state's key order -> the trainer's (fused weight_qkv moved in
    front of its layer's o_proj)."""
    fused = [k for k in keys if k.endswith("self_attn.qkv_proj.weight_qkv")]
    out = []
    for k in keys:
        if k in fused:
            continue
        if k.endswith("self_attn.o_proj.weight"):
            q = k[: -len("o_proj.weight")] + "qkv_proj.weight_qkv"
            if q in fused:
                out.append(q)
        out.append(k)
    assert sorted(out) == sorted(keys), "trainer_order lost a key"
    return out


def trainer_state(sd, d: Dims, lay: Layout, tp: int, pp: int) -> "OrderedDict[str, torch.Tensor]":
    st = rank_state(sd, d, lay, tp, pp)
    return OrderedDict((k, st[k]) for k in trainer_order(list(st)))


def ranks(lay: Layout) -> list:
    """(tp, pp) in the order the pieces are concatenated: TP rank 0 first, so
    that its copy of a replicated element is the one `assemble` takes."""
    return [(t, p) for t in range(lay.tp) for p in range(lay.pp)]


class PieceMap:
    def __init__(self, d: Dims, lay: Layout):
        self.d, self.lay = d, lay
        self.hf_shapes = hf_shapes(d)
        numbers, off = OrderedDict(), 0
        for k, shape in self.hf_shapes.items():
            n = 1
            for s in shape:
                n *= s
            numbers[k] = torch.arange(off, off + n, dtype=torch.int64).reshape(shape)
            off += n
        self.numel = off
        # per rank: key -> shape, in the trainer's order
        self.keys = OrderedDict()
        src = []
        for t, p in ranks(lay):
            st = trainer_state(numbers, d, lay, t, p)
            self.keys[(t, p)] = OrderedDict((k, tuple(v.shape)) for k, v in st.items())
            src += [v.reshape(-1) for v in st.values()]
        # src[j]: the Hugging Face element held by element j of the concatenated pieces
        self.src = torch.cat(src)
        # first[e]: position in src of the first piece element holding e
        first = torch.full((self.numel,), -1, dtype=torch.int64)
        pos = torch.arange(self.src.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, self.src, pos, reduce="amin", include_self=False)
        assert int(first.min()) >= 0, "a Hugging Face element is in no rank piece"
        self.first = first

    def flat_pieces(self, pieces: dict) -> torch.Tensor:
        """pieces {(tp, pp): {key: tensor}} -> their concatenation, in map order."""
        out = []
        for r, keys in self.keys.items():
            assert list(pieces[r]) == list(keys), (r, list(pieces[r]), list(keys))
            for k, shape in keys.items():
                assert tuple(pieces[r][k].shape) == shape, (r, k, pieces[r][k].shape, shape)
                out.append(pieces[r][k].reshape(-1))
        return torch.cat(out)

    def split_hf(self, flat: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        out, off = OrderedDict(), 0
        for k, shape in self.hf_shapes.items():
            n = 1
            for s in shape:
                n *= s
            out[k] = flat[off : off + n].view(shape)
            off += n
        return out

    def assemble(self, pieces: dict) -> "OrderedDict[str, torch.Tensor]":
        """Hugging Face tensors from rank pieces (first holder of each element)."""
        return self.split_hf(self.flat_pieces(pieces)[self.first])

    def replica_spread(self, pieces: dict) -> float:
        """max |piece element - first holder of its element|: 0 when every
        replica equals the copy `assemble` takes."""
        flat = self.flat_pieces(pieces).double()
        return float((flat - flat[self.first][self.src]).abs().max())


class Gather(torch.autograd.Function):
    """Hugging Face flat vector (on `device`) from rank pieces: forward takes
    each element's first holder, backward gives every holder its element's
    whole gradient. The indexing runs on the host: as an XLA gather (and its
    transpose) inside the training graph, XLA:CPU took 20 to 60 s to compile
    it for each layout; on the host the training graph is the same for every
    layout and compiles once."""

    @staticmethod
    def forward(ctx, pmap: PieceMap, device, *pieces):
        ctx.pmap, ctx.device = pmap, device
        ctx.shapes = [p.shape for p in pieces]
        ctx.dtypes = [p.dtype for p in pieces]
        flat = torch.cat([p.detach().cpu().reshape(-1) for p in pieces])
        return flat[pmap.first].to(device)

    @staticmethod
    def backward(ctx, grad):
        g = grad.cpu()[ctx.pmap.src]
        parts, off = [], 0
        for shape, dtype in zip(ctx.shapes, ctx.dtypes):
            n = 1
            for s in shape:
                n *= s
            parts.append(g[off : off + n].view(shape).to(dtype=dtype).to(ctx.device))
            off += n
        return (None, None, *parts)
