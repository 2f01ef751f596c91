#!/usr/bin/env python3
"""The tutorial's real counts with a node's default limits (BENCHMARKS.md, "Scale").

Makes Llamas with the real layer and head counts at tiny widths (cheap: the
counts, not the bytes, are what is under test), converts them into trained
tags (xser and plain) with `shardfs convert`, and then, with the open-file
limit at 1024 soft AND hard (so ShardFS's own raise of the soft limit cannot
help), measures:

  export   convert TAG --format hf: wall (median), peak RSS, exact (bytes equal
           to the export of the plain tag, tensors equal to the model's)
  mount    mount TAG --format hf: time to ready, 8 concurrent readers, the
           daemon's descriptors and mappings sampled every 10 ms (peak), its
           VmHWM, the bytes read against the export, its idle CPU over 10 s
  reshard  convert TAG into another layout, then verify it against the model
  verify   verify the model against TAG itself
  absurd   inputs that claim absurd sizes: refused, in how long, in how much
           memory, naming what, writing nothing
  training (--training, alone) a 70B-count training tag with ZeRO-1 state
           at DP 4: resharded, kept, written and read as xser (300,000
           files), verified and mounted: time, peak RSS, the daemon's peaks

    .venv/bin/python bench/scale_bench.py              # 70B and 405B counts
    .venv/bin/python bench/scale_bench.py --quick      # 70B counts only, 1 round
    .venv/bin/python bench/scale_bench.py --wide       # also a 70B-count model 64x wider (2.2 GB)
    .venv/bin/python bench/scale_bench.py --training   # only a 70B-count training tag with ZeRO-1 state

Needs root (FUSE), GNU time, and a release build (or SHARDFS_BIN).
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchlib  # bench/, beside this script

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
PYTHON = os.environ.get("PYTHON") or (str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else "python3")
BIN = os.environ.get("SHARDFS_BIN") or str(ROOT / ".build/release/shardfs")
LIMIT = 1024

MODELS = {
    # name: (layers, hidden, heads, kv heads, intermediate, vocab)
    "70b": (80, 128, 64, 8, 128, 256),
    "70b-wide": (80, 1024, 64, 8, 3584, 16384),
    "405b": (126, 256, 128, 8, 128, 128),
}
# name: (model, layout flags, another layout to reshard into)
TAGS = {
    "70b-tp32pp8": ("70b", "--tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv",
                    "--tp-size 8 --pp-size 4 --qkv-linear"),
    "70b-wide-tp32pp8": ("70b-wide", "--tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv",
                         "--tp-size 8 --pp-size 4 --qkv-linear"),
    "405b-tp32pp18": ("405b", "--tp-size 32 --pp-size 18 --kv-size-multiplier 4 --qkv-linear --fuse-qkv",
                      "--tp-size 16 --pp-size 9 --kv-size-multiplier 2 --qkv-linear"),
    "405b-tp64pp16": ("405b", "--tp-size 64 --pp-size 16 --kv-size-multiplier 8 --qkv-linear --fuse-qkv",
                      "--tp-size 8 --pp-size 14 --qkv-linear"),
}


def limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def timed(args, limited=True, check=True):
    """(seconds, peak RSS in KiB, completed process) of `args` under GNU time."""
    report = OUT / ".time"
    start = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-o", str(report), "-f", "%M"] + [str(a) for a in args], capture_output=True,
                       text=True, preexec_fn=limit if limited else None)
    seconds = time.monotonic() - start
    lines = report.read_text().strip().splitlines()
    rss = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    if check and p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, args))}\n{p.stderr[-3000:]}")
    return seconds, rss, p


def model_path(name):
    path = OUT / f"scale-{name}"
    if not (path / "config.json").exists():
        layers, hidden, heads, kv, inter, vocab = MODELS[name]
        subprocess.run([PYTHON, str(ROOT / "bench/make_checkpoint.py"), "--out", str(path), "--layers", str(layers),
                        "--hidden", str(hidden), "--heads", str(heads), "--kv-heads", str(kv), "--intermediate", str(inter),
                        "--vocab", str(vocab), "--shard-mb", "500", "--untied", "--force"], check=True, capture_output=True)
    return path


def tag_path(name, fmt):
    model, layout, _ = TAGS[name]
    path = OUT / f"tag-{name}-{fmt}"
    if not (path / ".shardfs").exists():
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([BIN, "convert", str(model_path(model)), str(path)] + layout.split() + ["--format", fmt],
                       check=True, capture_output=True)
    return path


def file_count(path):
    return sum(1 for p in (path / "model").rglob("*") if p.is_file())


def drop(path):
    shutil.rmtree(path, ignore_errors=True)


def export(name, rounds):
    model, _, _ = TAGS[name]
    cfg = model_path(model)
    row = {}
    times = {"xser": [], "pt": []}
    rss = {"xser": [], "pt": []}
    # Alternating which goes first, each after a sync (the previous output's
    # writeback must not land in the next run's time).
    for round in range(rounds):
        for fmt in (("xser", "pt") if round % 2 == 0 else ("pt", "xser")):
            out = OUT / f"export-{name}-{fmt}"
            drop(out)
            os.sync()
            s, r, _ = timed([BIN, "convert", tag_path(name, fmt), out, "--format", "hf", "--config", cfg, "--source-hw-backend", "trn1"])
            times[fmt].append(s)
            rss[fmt].append(r)
    for fmt in ("xser", "pt"):
        out = OUT / f"export-{name}-{fmt}"
        size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        row[fmt] = dict(files=file_count(tag_path(name, fmt)), seconds=statistics.median(times[fmt]), rss=max(rss[fmt]), bytes=size, out=out)
    # For scale: reading the two tags' files alone (warm), the same way round.
    cats = {"xser": [], "pt": []}
    for round in range(rounds):
        for fmt in (("xser", "pt") if round % 2 == 0 else ("pt", "xser")):
            s, _, _ = timed(["sh", "-c", f"find {tag_path(name, fmt)}/model -type f -exec cat {{}} + > /dev/null"], limited=False)
            cats[fmt].append(s)
    row["cat"] = statistics.median(cats["pt"]) / statistics.median(cats["xser"])
    a, b = row["xser"]["out"], row["pt"]["out"]
    same = all(subprocess.run(["cmp", "-s", f, b / f.name]).returncode == 0 for f in a.glob("*.safetensors"))
    exact = subprocess.run([PYTHON, "-c", CHECK_TENSORS, str(cfg), str(a)], capture_output=True, text=True)
    row["exact"] = same and exact.returncode == 0
    if exact.returncode != 0:
        print(exact.stderr[-2000:], file=sys.stderr)
    return row


CHECK_TENSORS = """
import sys, glob
from safetensors.torch import load_file
a = {}; b = {}
for f in glob.glob(sys.argv[1] + '/*.safetensors'): a.update(load_file(f))
for f in glob.glob(sys.argv[2] + '/*.safetensors'): b.update(load_file(f))
assert set(a) == set(b), 'keys differ'
bad = [k for k in a if a[k].dtype != b[k].dtype or not (a[k] == b[k]).all()]
assert not bad, f'{len(bad)} tensors differ, e.g. {bad[:3]}'
"""


def daemon_pid(mnt):
    p = subprocess.run(["pgrep", "-f", f"shardfs mount .* {mnt} "], capture_output=True, text=True)
    return int(p.stdout.split()[0])


def proc_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Sampler:
    """While in use, the daemon `pid`'s descriptors and mappings every 10 ms,
    into `peak` (fds, maps), and its VmHWM at the end (hwm), as maxima."""

    def __init__(self, pid, peak):
        self.pid, self.peak, self.stop = pid, peak, threading.Event()
        self.thread = threading.Thread(target=self.sample)

    def sample(self):
        while not self.stop.is_set():
            try:
                self.peak["fds"] = max(self.peak["fds"], len(os.listdir(f"/proc/{self.pid}/fd")))
                with open(f"/proc/{self.pid}/maps") as f:
                    self.peak["maps"] = max(self.peak["maps"], sum(1 for _ in f))
            except OSError:
                return
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()
        with open(f"/proc/{self.pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        self.peak["hwm"] = max(self.peak["hwm"], hwm)


def mount(name, rounds, idle_seconds):
    model, _, _ = TAGS[name]
    cfg = model_path(model)
    tag = tag_path(name, "xser")
    expected = OUT / f"export-{name}-xser" / "model.safetensors"
    mnt = OUT / f"mnt-{name}"
    mnt.mkdir(parents=True, exist_ok=True)
    log = OUT / f"mnt-{name}.log"
    readies, reads = [], []
    peak = dict(fds=0, maps=0, hwm=0)
    exact = True
    idle = None
    for round in range(rounds):
        s, _, _ = timed([BIN, "mount", tag, mnt, "--format", "hf", "--config", cfg, "--source-hw-backend", "trn1",
                         "--log-file", log])
        readies.append(s)
        pid = daemon_pid(mnt)
        try:
            if round == 0:
                time.sleep(2)  # past the watcher's start (a stat of every source once)
                before = proc_ticks(pid)
                time.sleep(idle_seconds)
                idle = (proc_ticks(pid) - before) / os.sysconf("SC_CLK_TCK") / idle_seconds
            with Sampler(pid, peak):
                start = time.monotonic()
                readers = [subprocess.Popen(["cmp", str(mnt / "model.safetensors"), str(expected)]) for _ in range(8)]
                exact &= all(r.wait() == 0 for r in readers)
                reads.append(time.monotonic() - start)
        finally:
            subprocess.run([BIN, "unmount", str(mnt)], check=True)
    size = expected.stat().st_size
    return dict(ready=statistics.median(readies), read=statistics.median(reads), bytes=size, idle=idle, exact=exact, **peak)


def reshard_and_verify(name):
    model, layout, other = TAGS[name]
    cfg = model_path(model)
    tag = tag_path(name, "xser")
    out = OUT / f"reshard-{name}"
    drop(out)
    s1, r1, _ = timed([BIN, "convert", tag, out, "--config", cfg, "--source-hw-backend", "trn1"] + other.split())
    s2, r2, p2 = timed([BIN, "verify", cfg, out] + other.split(), check=False)
    s3, r3, p3 = timed([BIN, "verify", cfg, tag] + layout.split() + ["--format", "xser"], check=False)
    return dict(other=other, reshard=(s1, r1), verify_reshard=(s2, r2, p2.returncode == 0), verify_tag=(s3, r3, p3.returncode == 0))


def absurd(big_tag):
    """Each input: (what, command, the words its refusal must contain, output path that must not appear)."""
    tiny = ROOT / "examples/tiny-llama"
    work = OUT / "absurd"
    drop(work)
    work.mkdir(parents=True)
    cases = []
    for layers in (1_000_000_000_000, 2_000_000_000):
        m = work / f"layers-{layers}"
        shutil.copytree(tiny, m)
        cfg = json.loads((m / "config.json").read_text())
        cfg["num_hidden_layers"] = layers
        (m / "config.json").write_text(json.dumps(cfg))
        cases.append((f"config num_hidden_layers {layers:,} (plan)", ["plan", m], ["num_hidden_layers", str(layers)], None))
        cases.append((f"config num_hidden_layers {layers:,} for the {big_tag} tag (convert)",
                      ["convert", tag_path(big_tag, "xser"), work / f"out-{layers}", "--format", "hf",
                       "--config", m / "config.json", "--source-hw-backend", "trn1"],
                      ["num_hidden_layers", str(layers)], work / f"out-{layers}"))
    cases.append(("--part 4611686018427387903/4611686018427387904 (converts the last share)",
                  ["convert", tiny, work / "part", "--part", "4611686018427387903/4611686018427387904"], None, None))
    cases.append(("--jobs 100000", ["convert", tiny, work / "jobs", "--jobs", "100000"], ["--jobs", "100000"], work / "jobs"))
    cases.append(("--tp-size 4611686018427387904", ["convert", tiny, work / "tp", "--tp-size", "4611686018427387904"],
                  ["--tp-size"], work / "tp"))
    cases.append(("--pp-size 2^62 --virtual-pp-size 2^62", ["plan", tiny, "--pp-size", "4611686018427387904",
                                                            "--virtual-pp-size", "4611686018427387904"], ["--pp-size"], None))
    cases.append(("--kv-size-multiplier 2^63-1", ["plan", tiny, "--qkv-linear", "--tp-size", "2",
                                                  "--kv-size-multiplier", "9223372036854775807"], ["--kv-size-multiplier"], None))
    rows = []
    for what, args, words, out in cases:
        s, rss, p = timed([BIN] + args, check=False)
        if words is None:
            ok = p.returncode == 0
            named = "(accepted: the last of 2^62 shares)"
        else:
            ok = p.returncode != 0 and all(w in p.stderr for w in words)
            lines = p.stderr.strip().splitlines() or [""]
            named = next((line for line in lines if "rror" in line), lines[-1])[:160].replace("|", "\\|")
        written = out is not None and Path(out).exists()
        rows.append((what, s, rss, ok and not written, named, written))
    return rows


TRAINING_LAYOUT = "--tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear"
TRAINING_OTHER = "--tp-size 8 --pp-size 4 --qkv-linear --dp-size 2"


def training():
    """A 70B-count training tag with ZeRO-1 state and master weights at DP 4
    (bench/make_training_tag.py: 256 rank files, 1,024 optimizer files),
    each command under the limit: (what, seconds, peak RSS KiB, ok) rows,
    and the daemon's peaks serving the tag's xser form."""
    cfg = model_path("70b")
    tag = OUT / "training-70b-tp32pp8-dp4"
    if not (tag / "done").exists():
        drop(tag)
        subprocess.run([PYTHON, str(ROOT / "bench/make_training_tag.py"), "--src", str(cfg), "--out", str(tag),
                        "--layout", TRAINING_LAYOUT, "--dp", "4", "--master", "--shardfs", BIN], check=True, capture_output=True)
    source = ["--config", str(cfg), "--source-hw-backend", "trn1"]
    same, other = TRAINING_LAYOUT.split() + ["--dp-size", "4"], TRAINING_OTHER.split()
    xser, out = OUT / "training-70b-xser", OUT / "training-70b-out"
    rows = []

    def run(what, args, check=True):
        s, r, p = timed([BIN, *args], check=check)
        rows.append((what, s, r, p.returncode == 0))

    for d in (xser, out):
        drop(d)
    run("convert into TP8 PP4 DP2 (64 optimizer files)", ["convert", tag, out, *source, *other])
    drop(out)
    run("convert in the tag's own layout (1,024 optimizer files)", ["convert", tag, out, *source, *same])
    drop(out)
    run("plan in xser (about 300,000 files)", ["plan", tag, *source, *same, "--format", "xser"])
    run("convert into xser", ["convert", tag, xser, *source, *same, "--format", "xser"])
    run("convert the xser tag into TP8 PP4 DP2", ["convert", xser, out, *source, *other])
    run("the same again, every file finished (resume)", ["convert", xser, out, *source, *other])
    run("verify the xser tag's reshard", ["verify", xser, out, *source, *other], check=False)
    drop(out)
    dcp = ["--format", "dcp", "--dcp-shards", "64"]
    run("convert into DCP (TorchTitan, 64 shards)", ["convert", tag, out, *source, *dcp])
    drop(out)
    run("convert the xser tag into DCP (TorchTitan, 64 shards)", ["convert", xser, out, *source, *dcp])
    drop(out)
    mnt = OUT / "mnt-training-70b"
    mnt.mkdir(parents=True, exist_ok=True)
    peak = dict(fds=0, maps=0, hwm=0)
    timed([BIN, "mount", xser, mnt, *source, *other, "--log-file", OUT / "mnt-training-70b.log"])
    try:
        with Sampler(daemon_pid(mnt), peak):
            start = time.monotonic()
            subprocess.run(["sh", "-c", f"cat {mnt}/optim/* {mnt}/model/* > /dev/null"], check=True)
            read = time.monotonic() - start
    finally:
        subprocess.run([BIN, "unmount", str(mnt)], check=True)
    # The xser tag served as a TorchTitan checkpoint: ready time, and the
    # daemon's peaks while every file is read.
    dcp_peak = dict(fds=0, maps=0, hwm=0)
    ready, _, _ = timed([BIN, "mount", xser, mnt, *source, *dcp, "--log-file", OUT / "mnt-training-70b-dcp.log"])
    try:
        with Sampler(daemon_pid(mnt), dcp_peak):
            subprocess.run(["sh", "-c", f"cat {mnt}/.metadata {mnt}/*.distcp > /dev/null"], check=True)
    finally:
        subprocess.run([BIN, "unmount", str(mnt)], check=True)
    drop(xser)
    return rows, dict(read=read, dcp_ready=ready, dcp=dcp_peak, **peak)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="70B counts only, one round, 3 s of idle CPU")
    ap.add_argument("--wide", action="store_true", help="also the 70B-count model 64x wider (2.2 GB), for export throughput")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--training", action="store_true",
                    help="only the 70B-count training tag with ZeRO-1 state (pt and xser, about 300,000 files; 5 minutes)")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    names = ["70b-tp32pp8"] if args.quick else ["70b-tp32pp8", "405b-tp32pp18", "405b-tp64pp16"]
    if args.wide:
        names.append("70b-wide-tp32pp8")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# scale_bench.py at {commit}, {time.strftime('%Y-%m-%d %H:%M')}, open-file limit {LIMIT} (soft and hard), median of {rounds}\n")
    if args.training:
        rows, m = training()
        print(f"| 70B-count training tag, DP 4 (`{TRAINING_LAYOUT}`) | time | peak RSS | ok |")
        print("|---|---:|---:|---|")
        for what, s, rss, ok in rows:
            benchlib.summary("scale", f"training tag: {what}: peak RSS", f"{rss / 1024:.0f} MB", "< 256 MB", benchlib.status(rss / 1024, "<=", 256))
            print(f"| {what} | {s:.2f} s | {rss / 1024:.0f} MB | {'yes' if ok else 'NO'} |")
        benchlib.summary("scale", "training tag in xser mounted as TP8 PP4 DP2, every file read: daemon peak fds / mappings / VmHWM",
                         f"{m['fds']} / {m['maps']:,} / {m['hwm'] / 1024:.0f} MB", "< 900 / < 10,000 / < 256 MB",
                         "met" if m["fds"] < 900 and m["maps"] < 10_000 and m["hwm"] < 250_000 else "not met")
        print(f"| mount the xser tag as `{TRAINING_OTHER}`, `cat` every file: daemon peak fds {m['fds']}, mappings {m['maps']:,} | "
              f"{m['read']:.2f} s | {m['hwm'] / 1024:.0f} MB (VmHWM) | |")
        d = m["dcp"]
        benchlib.summary("scale", "training tag in xser mounted as a DCP checkpoint (64 shards): ready",
                         f"{m['dcp_ready']:.2f} s", "< 2 s", benchlib.status(m["dcp_ready"], "<=", 2))
        benchlib.summary("scale", "training tag in xser mounted as a DCP checkpoint, every file read: daemon peak fds / mappings / VmHWM",
                         f"{d['fds']} / {d['maps']:,} / {d['hwm'] / 1024:.0f} MB", "< 900 / < 10,000 / < 256 MB",
                         "met" if d["fds"] < 900 and d["maps"] < 10_000 and d["hwm"] < 256 * 1024 else "not met")
        print(f"| mount the xser tag as a DCP checkpoint (64 shards): ready in {m['dcp_ready']:.2f} s; `cat` every file: daemon peak fds {d['fds']}, "
              f"mappings {d['maps']:,} | | {d['hwm'] / 1024:.0f} MB (VmHWM) | |")
        return
    print("| tag | files | export xser | export plain (same bytes) | xser/plain throughput | `cat` of the xser tag / of the plain tag | peak RSS | exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    exports = {}
    for name in names:
        e = exports[name] = export(name, rounds)
        x, p = e["xser"], e["pt"]
        if name in ("70b-tp32pp8", "70b-wide-tp32pp8"):
            r = p["seconds"] / x["seconds"]
            benchlib.summary("scale", f"hf export of the {name} tag (xser, {x['files']:,} files), throughput vs the same bytes in a plain tag "
                             f"(`cat` of the same files: {e['cat']:.2f}x)", f"{r:.2f}x", ">= 0.7x", benchlib.status(r, ">=", 0.7))
        benchlib.summary("scale", f"hf export of the {name} tag: peak RSS, exact", f"{max(x['rss'], p['rss']) / 1024:.0f} MB, "
                         + ("exact" if e["exact"] else "NOT exact"), "< 256 MB, exact",
                         "met" if e["exact"] and max(x["rss"], p["rss"]) < 250_000 else "not met")
        print(f"| {name} | {x['files']:,} | {x['seconds']:.2f} s ({x['bytes'] / x['seconds'] / 1e6:.0f} MB/s) | "
              f"{p['seconds']:.2f} s ({p['bytes'] / p['seconds'] / 1e6:.0f} MB/s) | {p['seconds'] / x['seconds']:.2f}x | {e['cat']:.2f}x | "
              f"{max(x['rss'], p['rss']) / 1024:.0f} MB | {'yes' if e['exact'] else 'NO'} |")
    print("\n| tag | mount ready | 8 readers of model.safetensors | daemon peak fds | peak mappings | VmHWM | idle CPU | exact |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name in names:
        m = mount(name, rounds, 3 if args.quick else 10)
        if name.startswith("405b"):
            benchlib.summary("scale", f"mount ready, {name} tag", f"{m['ready']:.2f} s", "< 2 s", benchlib.status(m["ready"], "<=", 2))
        benchlib.summary("scale", f"mount {name} --format hf, 8 readers: daemon peak descriptors / mappings / VmHWM",
                         f"{m['fds']} / {m['maps']:,} / {m['hwm'] / 1024:.0f} MB", "< 900 / < 10,000 / < 256 MB",
                         "met" if m["fds"] < 900 and m["maps"] < 10_000 and m["hwm"] < 250_000 and m["exact"] else "not met")
        benchlib.summary("scale", f"daemon idle CPU, {name} tag mounted", f"{100 * m['idle']:.1f}% of a core", "< 1%",
                         benchlib.status(m["idle"], "<=", 0.01))
        print(f"| {name} | {m['ready']:.2f} s | {m['read']:.2f} s ({8 * m['bytes'] / m['read'] / 1e6:.0f} MB/s) | {m['fds']} | "
              f"{m['maps']:,} | {m['hwm'] / 1024:.0f} MB | {100 * m['idle']:.1f}% of a core | {'yes' if m['exact'] else 'NO'} |")
    print("\n| tag | reshard into | convert | verify the reshard | verify the tag |")
    print("|---|---|---:|---:|---:|")
    for name in names:
        r = reshard_and_verify(name)
        fmt = lambda t: f"{t[0]:.2f} s, {t[1] / 1024:.0f} MB" + ("" if len(t) < 3 else (", exact" if t[2] else ", FAILED"))
        print(f"| {name} | `{r['other']}` | {fmt(r['reshard'])} | {fmt(r['verify_reshard'])} | {fmt(r['verify_tag'])} |")
    print("\n| absurd input | refused in | peak RSS | refused by name, nothing written | message |")
    print("|---|---:|---:|---|---|")
    absurd_rows = absurd(names[-1] if args.quick else "405b-tp64pp16")
    worst = max(r[1] for r in absurd_rows), max(r[2] for r in absurd_rows)
    benchlib.summary("scale", f"{len(absurd_rows)} absurd inputs (10^12 layers, --part 2^62, --jobs 100000, ...): slowest refusal, peak RSS",
                     f"{worst[0]:.2f} s, {worst[1] / 1024:.0f} MB", "< 1 s, < 64 MB, named, nothing written",
                     "met" if worst[0] < 1 and worst[1] < 65536 and all(r[3] for r in absurd_rows) else "not met")
    for what, s, rss, ok, named, written in absurd_rows:
        print(f"| {what} | {s:.2f} s | {rss / 1024:.0f} MB | {'yes' if ok else 'NO'}{' (wrote output!)' if written else ''} | {named} |")


if __name__ == "__main__":
    main()
