#!/usr/bin/env python3
"""The way back to Hugging Face: `shardfs convert TAG OUT --format hf` and the
`--format hf` mount, against their baselines, side by side in one run.

An NxD tag (default: Llama-3.2-1B shapes, TP=8 PP=2 qkv_linear fuse_qkv, made
by `shardfs convert` on first use) is
1. converted to a Hugging Face checkpoint on disk and on tmpfs, alternating
   with `cp -r` of the tag to the same place (each timed with its `sync`, the
   tag warm in the page cache): GB/s of bytes written, the ratio, peak RSS;
2. merged the Python way (bench/python_merge.py: torch.load of every rank
   file, merge, safetensors save_file), timed against shardfs;
3. loaded with `AutoModelForCausalLM.from_pretrained` through a fresh
   `shardfs mount TAG MNT --format hf` and from the converted directory,
   alternating, warm and cold (page cache dropped before each: needs root).

Medians of --rounds rounds; prints a markdown table for BENCHMARKS.md.

    swift build -c release
    bench/hf_bench.py --rounds 5
    bench/hf_bench.py --src bench-out/tiny --layout "--tp-size 2" --rounds 2   # a quick try
"""
import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib  # bench/, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LAYOUT = "--tp-size 8 --pp-size 2 --qkv-linear --fuse-qkv"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def default_python():
    if os.environ.get("PYTHON"):
        return os.environ["PYTHON"]
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else "python3"


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def timed(cmd, **kw):
    """Runs `cmd && sync` under GNU time: (seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        line = " ".join(shlex.quote(c) for c in cmd)
        subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", t.name, "sh", "-c", line + " && sync"],
                       check=True, stdout=subprocess.DEVNULL, **kw)
        seconds, kib = t.read().split()[-2:]
    return float(seconds), int(kib) / 1024


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm(path):
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


LOADER = r"""
import sys, time, torch
from transformers import AutoModelForCausalLM
t = time.time()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
print(time.time() - t)
"""


def from_pretrained_seconds(python, directory):
    out = subprocess.run([python, "-c", LOADER, directory], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def mount(shardfs, tag, mnt, config):
    os.makedirs(mnt, exist_ok=True)
    subprocess.run([shardfs, "mount", tag, mnt, "--config", config, "--format", "hf"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def unmount(mnt):
    subprocess.run(["fusermount3", "-u", mnt], check=False)


def main():
    ap = argparse.ArgumentParser(prog="bench/hf_bench.py", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", help="HF checkpoint the tag is made from (default WORK/llama-3.2-1b, created by bench/make_checkpoint.py)")
    ap.add_argument("--layout", default=DEFAULT_LAYOUT, help=f'the tag\'s layout flags (default "{DEFAULT_LAYOUT}")')
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python-rounds", type=int, default=3, help="rounds of the Python merge, per place (default 3)")
    ap.add_argument("--skip-python", action="store_true")
    ap.add_argument("--skip-mount", action="store_true")
    ap.add_argument("--work", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--shardfs", default=os.environ.get("SHARDFS_BIN", os.path.join(REPO, ".build/release/shardfs")))
    a = ap.parse_args()
    python = default_python()
    src = a.src or os.path.join(a.work, "llama-3.2-1b")
    if not os.path.exists(src):
        subprocess.run([python, os.path.join(REPO, "bench/make_checkpoint.py"), "--out", src], check=True)
    flags = shlex.split(a.layout)
    tag = os.path.join(a.work, "hf-bench-tag-" + os.path.basename(src.rstrip("/")) + re.sub("[^a-z0-9]+", "-", a.layout.lower()))
    if not os.path.exists(os.path.join(tag, "model")):
        log(f"making the tag {tag}")
        subprocess.run([a.shardfs, "convert", src, tag, *flags], check=True, stdout=subprocess.DEVNULL)
    config = os.path.join(src, "config.json")
    tag_bytes = tree_bytes(tag)
    hf = [a.shardfs, "convert", tag, None, "--config", config, "--format", "hf"]
    rows = []

    for place, root in (("disk", os.path.join(a.work, "hf-bench-out")), ("tmpfs", os.path.join(a.tmpfs, "shardfs-hf-bench"))):
        cp_rates, hf_rates, hf_rss = [], [], []
        out_bytes = None
        for round in range(a.rounds):
            warm(tag)
            for which in (("cp", "hf") if round % 2 == 0 else ("hf", "cp")):
                shutil.rmtree(root, ignore_errors=True)
                os.makedirs(root)
                dest = os.path.join(root, "out")
                if which == "cp":
                    seconds, _ = timed(["cp", "-r", tag, dest])
                    cp_rates.append(tag_bytes / seconds / 1e9)
                else:
                    cmd = list(hf)
                    cmd[3] = dest
                    seconds, rss = timed(cmd)
                    out_bytes = tree_bytes(dest)
                    hf_rates.append(out_bytes / seconds / 1e9)
                    hf_rss.append(rss)
                log(f"{place} round {round}: {which} {seconds:.2f} s")
            shutil.rmtree(root, ignore_errors=True)
        cp, conv = statistics.median(cp_rates), statistics.median(hf_rates)
        rows.append((f"`convert --format hf` to {place} vs `cp -r` of the tag", f"{conv:.2f} GB/s", f"{cp:.2f} GB/s",
                     f"{conv / cp:.2f}x", f"{max(hf_rss):.0f} MB"))
        benchlib.summary("way back", f"1B tag to Hugging Face (`convert --format hf`) to {place}, bytes/s vs `cp -r` of the tag",
                         f"{conv / cp:.2f}x", ">= 0.7x", benchlib.status(conv / cp, ">=", 0.7))

    if not a.skip_python:
        merge_flags = [f.replace("--", "", 1).replace("-", "_") for f in flags]
        merge_flags = ["--" + f if not f[0].isdigit() else f for f in merge_flags]
        for place, root in (("disk", os.path.join(a.work, "hf-bench-python")), ("tmpfs", os.path.join(a.tmpfs, "shardfs-hf-python"))):
            py_times, sh_times, py_rss = [], [], []
            for round in range(a.python_rounds):
                warm(tag)
                for which in (("python", "shardfs") if round % 2 == 0 else ("shardfs", "python")):
                    shutil.rmtree(root, ignore_errors=True)
                    if which == "python":
                        seconds, rss = timed([python, os.path.join(REPO, "bench/python_merge.py"), "--tag", tag, "--config", config,
                                              "--out", root, *merge_flags])
                        py_times.append(seconds)
                        py_rss.append(rss)
                    else:
                        cmd = list(hf)
                        cmd[3] = root
                        sh_times.append(timed(cmd)[0])
                    log(f"python-way {place} round {round}: {which} {seconds if which == 'python' else sh_times[-1]:.2f} s")
                shutil.rmtree(root, ignore_errors=True)
            py, sh = statistics.median(py_times), statistics.median(sh_times)
            rows.append((f"`convert --format hf` vs the Python way (torch.load all, merge, save_file), to {place}",
                         f"{sh:.2f} s", f"{py:.2f} s ({max(py_rss):.0f} MB RSS)", f"{py / sh:.1f}x faster", ""))
            benchlib.summary("way back", f"1B tag to Hugging Face vs the Python way (load, merge, save), to {place}",
                             f"{py / sh:.1f}x faster", ">= 5x", benchlib.status(py / sh, ">=", 5))

    if not a.skip_mount:
        ref = tag + "-hf"
        if not os.path.exists(os.path.join(ref, "config.json")):
            cmd = list(hf)
            cmd[3] = ref
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        mnt = os.path.join(a.work, "hf-bench-mnt")
        for state in ("warm", "cold"):
            direct, mounted = [], []
            for round in range(a.rounds):
                for which in (("dir", "mount") if round % 2 == 0 else ("mount", "dir")):
                    if which == "mount":
                        mount(a.shardfs, tag, mnt, config)
                        try:
                            if state == "warm":
                                warm(tag)
                            else:
                                drop_caches()
                            mounted.append(from_pretrained_seconds(python, mnt))
                        finally:
                            unmount(mnt)
                    else:
                        if state == "warm":
                            warm(ref)
                        else:
                            drop_caches()
                        direct.append(from_pretrained_seconds(python, ref))
                    log(f"from_pretrained {state} round {round}: {which} {(mounted if which == 'mount' else direct)[-1]:.2f} s")
            d, m = statistics.median(direct), statistics.median(mounted)
            rows.append((f"`from_pretrained` through the hf mount vs the converted directory, {state}",
                         f"{m:.2f} s", f"{d:.2f} s", f"{d / m:.2f}x", ""))
            benchlib.summary("way back", f"`from_pretrained` through `mount --format hf` vs the converted directory, {state}",
                             f"{d / m:.2f}x", ">= 0.7x", benchlib.status(d / m, ">=", 0.7))

    print(f"\n{a.rounds} rounds (medians); tag: {tag} ({tag_bytes / 1e9:.2f} GB, {a.layout})\n")
    print("| what | shardfs | baseline | ratio (throughput) | shardfs peak RSS |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
