#!/usr/bin/env python3
"""A training tag's whole state resharded: `shardfs convert` and the mount of
a tag with ZeRO-1 optimizer state into another TP/PP/DP layout, against
their baselines, side by side in one run.

The tag has Llama-3.2-1B's shapes (bench/make_checkpoint.py) at TP=4 DP=2,
its optimizer state synthetic (bench/make_training_tag.py: fp32 exp_avg and
exp_avg_sq, a tensor step; ~10 GB), resharded to TP=2 PP=2 DP=4:
1. `convert` alternating with `cp -r` of the tag (each with its `sync`, the
   tag warm in the page cache): bytes/s of each, the ratio, convert's RSS;
2. every file read through a fresh mount of the new layout and from the
   converted directory, warm, alternating (`cat` of all files, 8 at a
   time): the ratio, the daemon's VmHWM;
3. against the Python way (bench/python_optimizer_reshard.py: torch.load of
   every optimizer file, merge, cut, torch.save; the optimizer files only)
   on 4 layers of the same widths with a 32k vocabulary, which that way can
   hold in RAM, writing to disk and to tmpfs.

Medians of --rounds rounds; prints a markdown table for BENCHMARKS.md.

    swift build -c release
    bench/optimizer_bench.py --rounds 3
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import benchlib  # bench/, beside this script
from hf_bench import default_python, drop_caches, log, timed, tree_bytes, warm  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_LAYOUT = "--tp-size 4"
TARGET = ["--tp-size", "2", "--pp-size", "2", "--dp-size", "4"]


def make(python, shardfs, src, tag, layers=None, vocab=None):
    if not os.path.exists(src):
        # Untied: a tied lm_head has no optimizer state of its own.
        extra = ["--untied"] + (["--layers", str(layers)] if layers else []) + (["--vocab", str(vocab)] if vocab else [])
        subprocess.run([python, os.path.join(REPO, "bench/make_checkpoint.py"), "--out", src, *extra], check=True, stdout=sys.stderr)
    if not os.path.exists(os.path.join(tag, "done")):
        log(f"making the training tag {tag}")
        subprocess.run([python, os.path.join(REPO, "bench/make_training_tag.py"), "--src", src, "--out", tag,
                        "--layout", SOURCE_LAYOUT, "--dp", "2", "--shardfs", shardfs], check=True, stderr=subprocess.DEVNULL)


def read_all(root, jobs=8):
    """Every file under root read in 4 MiB reads (as torch.load's do), `jobs` files at a time: seconds."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if ".shardfs" not in d]
    start = time.monotonic()
    subprocess.run(["sh", "-c", f"printf '%s\\0' \"$@\" | xargs -0 -P {jobs} -I{{}} dd if={{}} of=/dev/null bs=4M status=none", "sh", *files],
                   check=True)
    return time.monotonic() - start


def daemon_hwm(mnt):
    out = subprocess.run(["pgrep", "-f", f"shardfs mount .* {mnt}"], capture_output=True, text=True).stdout.split()
    for pid in out:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM"):
                        return int(line.split()[1]) / 1024
        except OSError:
            continue
    return 0.0


def main():
    ap = argparse.ArgumentParser(prog="bench/optimizer_bench.py", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-python", action="store_true")
    ap.add_argument("--skip-mount", action="store_true")
    ap.add_argument("--skip-convert", action="store_true")
    ap.add_argument("--work", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--shardfs", default=os.environ.get("SHARDFS_BIN", os.path.join(REPO, ".build/release/shardfs")))
    a = ap.parse_args()
    python = default_python()
    src, tag = os.path.join(a.work, "llama-3.2-1b-untied"), os.path.join(a.work, "train-tag-1b-tp4-dp2")
    make(python, a.shardfs, src, tag)
    config = os.path.join(src, "config.json")
    convert = [a.shardfs, "convert", tag, None, "--config", config, *TARGET]
    tag_bytes = tree_bytes(tag)
    rows = []

    out = os.path.join(a.work, "optimizer-bench-out")
    cp_rates, rates, rss = [], [], []
    for round in range(0 if a.skip_convert else a.rounds):
        warm(tag)
        for which in (("cp", "convert") if round % 2 == 0 else ("convert", "cp")):
            shutil.rmtree(out, ignore_errors=True)
            if which == "cp":
                seconds, _ = timed(["cp", "-r", tag, out])
                cp_rates.append(tag_bytes / seconds / 1e9)
            else:
                cmd = list(convert)
                cmd[3] = out
                seconds, peak = timed(cmd)
                rates.append(tree_bytes(out) / seconds / 1e9)
                rss.append(peak)
            log(f"round {round}: {which} {seconds:.2f} s")
    shutil.rmtree(out, ignore_errors=True)
    if not a.skip_convert:
        cp, conv = statistics.median(cp_rates), statistics.median(rates)
        rows.append(("`convert` TP4 DP2 -> TP2 PP2 DP4 (model + optimizer, 15 GB) vs `cp -r` of the tag",
                     f"{conv:.2f} GB/s", f"{cp:.2f} GB/s", f"{conv / cp:.2f}x", f"{max(rss):.0f} MB"))
        benchlib.summary("optimizer", "1B training tag resharded with its optimizer (`convert`), bytes/s vs `cp -r` of the tag",
                         f"{conv / cp:.2f}x", ">= 0.7x", benchlib.status(conv / cp, ">=", 0.7))
        benchlib.summary("optimizer", "1B training tag resharded: convert's peak RSS", f"{max(rss):.0f} MB", "< 256 MB",
                         benchlib.status(max(rss), "<=", 256))

    if not a.skip_mount:
        converted = os.path.join(a.work, "optimizer-bench-converted")
        if not os.path.exists(os.path.join(converted, "done")):
            cmd = list(convert)
            cmd[3] = converted
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mnt = os.path.join(a.work, "optimizer-bench-mnt")
        os.makedirs(mnt, exist_ok=True)
        direct, mounted, hwm = [], [], []
        size = tree_bytes(converted)
        for round in range(a.rounds):
            warm(tag)
            warm(converted)
            for which in (("dir", "mount") if round % 2 == 0 else ("mount", "dir")):
                if which == "dir":
                    direct.append(size / read_all(converted) / 1e9)
                    continue
                subprocess.run([a.shardfs, "mount", tag, mnt, "--config", config, *TARGET], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    mounted.append(size / read_all(mnt) / 1e9)
                    hwm.append(daemon_hwm(mnt))
                finally:
                    subprocess.run([a.shardfs, "unmount", mnt], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                log(f"round {round}: mount {mounted[-1]:.2f} GB/s, converted {direct[-1] if direct else 0:.2f} GB/s")
        shutil.rmtree(converted, ignore_errors=True)  # 15 GB: room for what follows
        d, m = statistics.median(direct), statistics.median(mounted)
        rows.append(("every file read through the mount vs the converted files, warm, 8 readers",
                     f"{m:.2f} GB/s", f"{d:.2f} GB/s", f"{m / d:.2f}x", f"{max(hwm):.0f} MB (daemon VmHWM)"))
        benchlib.summary("optimizer", "1B training tag's new layout read through the mount vs converted files, warm",
                         f"{m / d:.2f}x", ">= 0.8x", benchlib.status(m / d, ">=", 0.8))
        benchlib.summary("optimizer", "1B training tag mounted: the daemon's VmHWM", f"{max(hwm):.0f} MB", "< 256 MB",
                         benchlib.status(max(hwm), "<=", 256))

    if not a.skip_python:
        small_src, small = os.path.join(a.work, "llama-4layers-32k-untied"), os.path.join(a.work, "train-tag-4l32k-tp4-dp2")
        make(python, a.shardfs, small_src, small, layers=4, vocab=32000)
        small_config = os.path.join(small_src, "config.json")
        for place, root in (("disk", os.path.join(a.work, "optimizer-bench-python")),
                            ("tmpfs", os.path.join(a.tmpfs, "shardfs-optimizer-python"))):
            py_times, py_rss, sh_times, sh_rss = [], [], [], []
            for round in range(a.rounds):
                warm(small)
                for which in (("python", "shardfs") if round % 2 == 0 else ("shardfs", "python")):
                    shutil.rmtree(root, ignore_errors=True)
                    if which == "python":
                        seconds, peak = timed([python, os.path.join(REPO, "bench/python_optimizer_reshard.py"), "--tag", small,
                                               "--out", root, "--layers", "4", "--tp", "4", "--pp", "1", "--dp", "2",
                                               "--new-tp", "2", "--new-pp", "2", "--new-dp", "4"])
                        py_times.append(seconds)
                        py_rss.append(peak)
                    else:
                        seconds, peak = timed([a.shardfs, "convert", small, root, "--config", small_config, *TARGET])
                        sh_times.append(seconds)
                        sh_rss.append(peak)
                    log(f"python-way {place} round {round}: {which} {seconds:.2f} s")
            shutil.rmtree(root, ignore_errors=True)
            py, sh = statistics.median(py_times), statistics.median(sh_times)
            rows.append((f"`convert` (model + optimizer) vs the Python way (load every optimizer file, merge, cut, save; the optimizer only), "
                         f"4 layers of 1B widths with a 32k vocabulary (3 GB of state), to {place}",
                         f"{sh:.2f} s, {max(sh_rss):.0f} MB", f"{py:.2f} s, {max(py_rss):.0f} MB", f"{py / sh:.1f}x faster", ""))
            benchlib.summary("optimizer", f"training tag resharded vs the Python way (load all, merge, cut, save), to {place}",
                             f"{py / sh:.1f}x faster, {max(sh_rss):.0f} vs {max(py_rss):.0f} MB", ">= 5x",
                             benchlib.status(py / sh, ">=", 5))

    print(f"# optimizer_bench.py, {time.strftime('%Y-%m-%d %H:%M')}, median of {a.rounds}\n")
    print("| what | shardfs | baseline | ratio | memory |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
