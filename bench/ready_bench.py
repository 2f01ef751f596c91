#!/usr/bin/env python3
"""How long a 70B-count training tag takes to open (BENCHMARKS.md, "ready").

Opening a training tag is what `plan`, `convert`, `verify` and a mount's
ready time all start with: its 256 rank files and 1,024 ZeRO-1 optimizer
files (pt), or those and their ~350,000 xser tensor files, read and checked.
This times, under `ulimit -n 1024`, for each binary given (paired rounds,
alternating which goes first, medians):

  plan   plan TAG --format dcp --dcp-shards 64 (the DCP plan, .metadata pickled)
  ready  mount TAG MNT --format dcp --dcp-shards 64: seconds until `shardfs
         mount` returns (the daemon answers), and the daemon's VmHWM then

on the pt training tag of `scale_bench.py --training` (made here if missing)
and, where it exists, its xser form (bench-out/training-70b-xser, made by
`scale_bench.py --training`, or by hand: see BENCHMARKS.md).

    .venv/bin/python bench/ready_bench.py --bin NEW [--bin OLD] [--rounds 3]

Needs root (FUSE) and GNU time.
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import scale_bench as S  # bench/, beside this script


def daemon_hwm_kb(mnt):
    pid = S.daemon_pid(mnt)
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="a shardfs binary (give two to compare them)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cfg = S.model_path("70b")
    pt = S.OUT / "training-70b-tp32pp8-dp4"
    if not (pt / "done").exists():
        S.drop(pt)
        subprocess.run([S.PYTHON, str(S.ROOT / "bench/make_training_tag.py"), "--src", str(cfg), "--out", str(pt),
                        "--layout", S.TRAINING_LAYOUT, "--dp", "4", "--master", "--shardfs", S.BIN],
                       check=True, capture_output=True)
    tags = [("pt", pt)]
    xser = S.OUT / "training-70b-xser"
    if (xser / "done").exists():
        tags.append(("xser", xser))
    else:
        print(f"(no {xser}: the xser rows are left out)", file=sys.stderr)
    source = ["--config", str(cfg), "--source-hw-backend", "trn1"]
    dcp = ["--format", "dcp", "--dcp-shards", "64"]
    mnt = S.OUT / "mnt-ready"
    mnt.mkdir(parents=True, exist_ok=True)
    got = {}  # (bin, tag, what) -> [values]
    for r in range(args.rounds):
        order = args.bin if r % 2 == 0 else list(reversed(args.bin))
        for name, tag in tags:
            for b in order:
                s, rss, _ = S.timed([b, "plan", tag, *source, *dcp])
                got.setdefault((b, name, "plan s"), []).append(s)
                got.setdefault((b, name, "plan MB"), []).append(rss / 1024)
                s, _, _ = S.timed([b, "mount", tag, mnt, *source, *dcp, "--log-file", S.OUT / "mnt-ready.log"])
                try:
                    hwm = daemon_hwm_kb(mnt)
                finally:
                    subprocess.run([b, "unmount", str(mnt)], check=True)
                got.setdefault((b, name, "ready s"), []).append(s)
                got.setdefault((b, name, "ready MB"), []).append(hwm / 1024)
                print(f"round {r + 1}/{args.rounds} {name} {b}: plan {got[(b, name, 'plan s')][-1]:.2f} s, "
                      f"ready {s:.2f} s ({hwm / 1024:.0f} MB)", file=sys.stderr)
    print(f"| tag | binary | plan (median of {args.rounds}) | plan peak RSS | mount ready | daemon VmHWM at ready |")
    print("|---|---|---:|---:|---:|---:|")
    for name, _ in tags:
        for b in args.bin:
            m = {w: statistics.median(got[(b, name, w)]) for w in ("plan s", "plan MB", "ready s", "ready MB")}
            runs = ", ".join(f"{v:.2f}" for v in got[(b, name, "ready s")])
            print(f"| {name} | `{b}` | {m['plan s']:.2f} s | {m['plan MB']:.0f} MB | {m['ready s']:.2f} s ({runs}) | {m['ready MB']:.0f} MB |")


if __name__ == "__main__":
    main()
