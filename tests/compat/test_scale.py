"""The tutorial's real counts with a node's default limits.

A Llama with Llama-3-70B's counts (80 layers, 64 query / 8 KV heads) at tiny
widths, converted into the tutorial's layout as NxD's trainer saves it
(TP=32 PP=8, KV multiplier 4, fused QKV, xser: 15,968 files), is used as a
source with the open-file limit at 1024, soft and hard (so ShardFS's own
raise of the soft limit cannot help): exported to Hugging Face, mounted as
one with 8 concurrent readers while the daemon's descriptors and memory
mappings are sampled, resharded into another layout, and verified. A
training tag of the same counts with ZeRO-1 state at DP 4 (1,024 optimizer
files) is resharded, optimizer included, and verified under the same limit.

Expectations: the original tensors, written here with safetensors (an
export must give them back exactly), and `shardfs verify` of the reshard
against the original model (itself checked against reference.py by
test_verify.py).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import Run
from mounting import new_mnt

LIMIT = 1024
LAYERS, HIDDEN, HEADS, KV_HEADS, INTER, VOCAB = 80, 128, 64, 8, 128, 256
TUTORIAL = ["--tp-size", "32", "--pp-size", "8", "--kv-size-multiplier", "4", "--qkv-linear", "--fuse-qkv"]
SOURCE = ["--source-hw-backend", "trn1"]


def limited(shardfs, *args, timeout: float = 600) -> Run:
    """`shardfs ARGS` with RLIMIT_NOFILE at 1024, soft and hard."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    exe = shardfs.require()
    args = [str(a) for a in args]
    p = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, preexec_fn=limit)
    return Run(args, p.returncode, p.stdout, p.stderr)


def write_model(path: Path) -> dict:
    """A 70B-count Llama, bf16, in 4 shards with an index, as the hub ships one."""
    torch.manual_seed(19)
    d = HIDDEN // HEADS
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN)}
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        tensors.update({
            p + "self_attn.q_proj.weight": torch.randn(HEADS * d, HIDDEN),
            p + "self_attn.k_proj.weight": torch.randn(KV_HEADS * d, HIDDEN),
            p + "self_attn.v_proj.weight": torch.randn(KV_HEADS * d, HIDDEN),
            p + "self_attn.o_proj.weight": torch.randn(HIDDEN, HEADS * d),
            p + "mlp.gate_proj.weight": torch.randn(INTER, HIDDEN),
            p + "mlp.up_proj.weight": torch.randn(INTER, HIDDEN),
            p + "mlp.down_proj.weight": torch.randn(HIDDEN, INTER),
            p + "input_layernorm.weight": torch.randn(HIDDEN),
            p + "post_attention_layernorm.weight": torch.randn(HIDDEN),
        })
    tensors["model.norm.weight"] = torch.randn(HIDDEN)
    tensors["lm_head.weight"] = torch.randn(VOCAB, HIDDEN)
    tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    path.mkdir(parents=True)
    names = list(tensors)
    shards = [names[i::4] for i in range(4)]
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-00004.safetensors"
        save_file({k: tensors[k] for k in shard}, str(path / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in shard})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": LAYERS,
        "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "intermediate_size": INTER, "vocab_size": VOCAB, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}))
    return tensors


@pytest.fixture(scope="module")
def tutorial_tag(shardfs, tmp_path_factory):
    """(model directory, its tensors, the tag in the tutorial's layout, xser)."""
    root = tmp_path_factory.mktemp("scale")
    model = root / "llama-70b-counts"
    tensors = write_model(model)
    tag = root / "tag"
    r = shardfs.run("convert", model, tag, *TUTORIAL, "--format", "xser", timeout=900)
    assert r.returncode == 0, r.describe()
    files = sum(1 for p in (tag / "model").rglob("*") if p.is_file())
    assert files == 15968, f"{files} files in the tag, not the tutorial's 15,968"
    return model, tensors, tag


def assert_same_tensors(got: dict, want: dict, what: str) -> None:
    assert list(got) == list(want) or set(got) == set(want), f"{what}: keys differ"
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), f"{what}: {name} differs"


def test_export_to_hugging_face(shardfs, tutorial_tag, tmp_path):
    model, tensors, tag = tutorial_tag
    out = tmp_path / "hf"
    r = limited(shardfs, "convert", tag, out, "--format", "hf", "--config", model, *SOURCE)
    assert r.returncode == 0, r.describe()
    # Every tensor file is a source (the 256 reference and .info.pt files serve no bytes).
    assert "source: NxD checkpoint, 15456 files" in r.stderr, r.stderr[-2000:]
    got = {}
    for f in sorted(out.glob("*.safetensors")):
        got.update(load_file(str(f)))
    assert_same_tensors(got, tensors, "convert --format hf of the 70B-count tag")


def daemon_of(mnt: Path) -> int:
    p = subprocess.run(["pgrep", "-f", f"mount .*{mnt}"], capture_output=True, text=True)
    pids = [int(t) for t in p.stdout.split() if int(t) != os.getpid()]
    assert pids, f"no daemon for {mnt}"
    return pids[0]


def test_mount_with_eight_readers(shardfs, mounts, tutorial_tag, tmp_path):
    model, tensors, tag = tutorial_tag
    mnt = new_mnt(tmp_path)
    mounts._track(mnt)
    log = tmp_path / "daemon.log"
    r = limited(shardfs, "mount", tag, mnt, "--format", "hf", "--config", model, *SOURCE, "--log-file", log, timeout=120)
    assert r.returncode == 0, r.describe() + "\n" + (log.read_text() if log.exists() else "")
    pid = daemon_of(mnt)
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                with open(f"/proc/{pid}/maps") as f:
                    maps = sum(1 for _ in f)
                samples.append((fds, maps))
            except OSError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    served = mnt / "model.safetensors"
    reads: list[bytes] = [b""] * 8

    def read(i: int):
        reads[i] = served.read_bytes()

    readers = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    try:
        for t in readers:
            t.start()
        for t in readers:
            t.join()
    finally:
        stop.set()
        sampler.join()
    assert all(b == reads[0] for b in reads), "the 8 readers saw different bytes"
    # Read leases (one per open source on this local disk) cost no descriptor
    # of their own: the counts below hold with them.
    st = shardfs.run("status", mnt, "--json")
    assert st.returncode == 0, st.describe()
    sources = json.loads(st.stdout)["sources"]
    assert 0 < sources["leased"] < 900 and sources["leasesBroken"] == 0, sources
    (tmp_path / "served.safetensors").write_bytes(reads[0])
    assert_same_tensors(load_file(str(tmp_path / "served.safetensors")), tensors, "mount --format hf")
    assert samples, "the daemon was never sampled"
    fds, maps = max(s[0] for s in samples), max(s[1] for s in samples)
    assert fds < 900, f"the daemon held {fds} descriptors (limit 1024; 15,968 source files)"
    assert maps < 10_000, f"the daemon held {maps} memory mappings"


def test_reshard_and_verify(shardfs, tutorial_tag, tmp_path):
    model, _, tag = tutorial_tag
    out = tmp_path / "tp8pp4"
    other = ["--tp-size", "8", "--pp-size", "4", "--qkv-linear"]
    r = limited(shardfs, "convert", tag, out, *other, "--config", model, *SOURCE)
    assert r.returncode == 0, r.describe()
    r = limited(shardfs, "verify", model, out, *other)
    assert r.returncode == 0, r.describe()
    # And the tag itself, with its 15,968 files, against the model.
    r = limited(shardfs, "verify", model, tag, *TUTORIAL, "--format", "xser")
    assert r.returncode == 0, r.describe()


@pytest.fixture(scope="module")
def training_tag(shardfs, tutorial_tag, tmp_path_factory) -> Path:
    """A 70B-count training tag with ZeRO-1 state and master weights at DP 4
    (256 rank files, 1,024 optimizer files: bench/make_training_tag.py)."""
    model, _, _ = tutorial_tag
    tag = tmp_path_factory.mktemp("training") / "tag"
    layout = "--tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear"
    import sys
    p = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "bench/make_training_tag.py"), "--src", str(model),
                        "--out", str(tag), "--layout", layout, "--dp", "4", "--master", "--shardfs", str(shardfs.require())],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sum(1 for _ in (tag / "optim").iterdir()) == 1024
    return tag


RESHARD = ["--tp-size", "8", "--pp-size", "4", "--qkv-linear", "--dp-size", "2"]


def test_training_tag_with_optimizer_state(shardfs, tutorial_tag, training_tag, tmp_path):
    """The training tag resharded, optimizer included, into TP=8 PP=4 DP=2
    and verified, all under the limit, in bounded memory."""
    model, _, _ = tutorial_tag
    out = tmp_path / "tp8pp4dp2"
    peak = max_rss_kib(shardfs, "convert", training_tag, out, *RESHARD, "--config", model, *SOURCE)
    assert peak < 256 * 1024, f"convert of the training tag peaked at {peak // 1024} MB"
    assert sum(1 for _ in (out / "optim").iterdir()) == 64 and (out / "done").exists()
    peak = max_rss_kib(shardfs, "verify", training_tag, out, *RESHARD, "--config", model, *SOURCE)
    assert peak < 256 * 1024, f"verify of the reshard peaked at {peak // 1024} MB"


def max_rss_kib(shardfs, *args) -> int:
    """`shardfs ARGS` under the limit, which must succeed: its peak RSS in KiB."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    exe = shardfs.require()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", str(exe), *map(str, args)], capture_output=True, text=True,
                       timeout=900, preexec_fn=limit)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return int(p.stderr.strip().splitlines()[-1])
