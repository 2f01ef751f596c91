#!/usr/bin/env python3
"""An NxD training tag as a TorchTitan DCP checkpoint: `shardfs convert
--format dcp` and `shardfs mount --format dcp` against their baselines, side
by side in one run.

The tags are bench/optimizer_bench.py's (its `make()`: bench/make_training_tag.py,
TP=4 DP=2, synthetic ZeRO-1 state, no master weights, bf16 model files):
1. the Llama-3.2-1B-shaped tag (~15 GB) converted to a DCP folder (~18 GB:
   the model in fp32, exp_avg, exp_avg_sq) on disk, alternating with `cp -r`
   of the tag to the same disk (`--cp-of dcp`: of a converted DCP folder
   instead); each with its `sync`, its source read whole just before it
   (warm in the page cache): bytes written per second of each, the ratio,
   convert's peak RSS (GNU time);
2. the Python way (bench/python_dcp_export.py: torch.load of every rank and
   optimizer file, merge, q/k permuted, dcp.save in one process) against
   `convert --format dcp` of the same tag, to disk and to tmpfs: on 4 layers
   of the 1B widths with a 32k vocabulary (~4.5 GB of fp32 state), since the
   Python way holds the whole state (the 1B one would not fit in RAM twice);
3. `dcp.load` in 2 processes (bench/dcp_load.py: gloo, DTensors sharded on
   dim 0, each process holding half the state) of convert's folder against
   the folder dcp.save wrote in 2. (the same state), the small tag, each
   folder warm;
4. the same load through a fresh `shardfs mount --format dcp` of the small
   tag (the tag warm) against convert's folder (warm); the daemon's VmHWM.

Caches: every measurement is warm: each run's input (the tag, or the
folder to load) is read whole right before the run; outputs are removed
before each run; the page cache is never dropped. Medians of --rounds
rounds, the order of each pair alternating; prints a markdown table and
`benchlib.summary` lines. `--check`: the Python way's folder and convert's
(and the mount's) loaded with dcp.load and compared tensor for tensor.

    swift build -c release
    bench/dcp_bench.py --rounds 3 [--check]
    bench/dcp_bench.py --skip-1b --rounds 1       # the small tag only: minutes
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib  # bench/, beside this script
from hf_bench import default_python, log, tree_bytes, warm
from optimizer_bench import daemon_hwm, make

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(REPO, "bench")
SMALL = "4 layers of 1B widths, 32k vocabulary"
LOADS = []


def timed_io(cmd, **kw):
    """hf_bench.timed, and the bytes the command read from storage (GNU time's %I, 512-byte
    blocks): whether a warm source stayed in the page cache. (seconds, peak RSS MB, GB read)"""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        line = " ".join(shlex.quote(c) for c in cmd)
        subprocess.run(["/usr/bin/time", "-f", "%e %M %I", "-o", t.name, "sh", "-c", line + " && sync"],
                       check=True, stdout=subprocess.DEVNULL, **kw)
        seconds, kib, blocks = t.read().split()[-3:]
    return float(seconds), int(kib) / 1024, int(blocks) * 512 / 1e9


def runs(values, unit=""):
    return ", ".join(f"{v:.2f}{unit}" for v in values)


def daemon_cpu(mnt):
    """CPU seconds (user + system) the mount's daemon has used so far."""
    for pid in subprocess.run(["pgrep", "-f", f"shardfs mount .* {mnt}"], capture_output=True, text=True).stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return 0.0


def loadavg():
    with open("/proc/loadavg") as f:
        value = float(f.read().split()[0])
    LOADS.append(value)
    return value


def dcp_load(python, folder, procs):
    """bench/dcp_load.py's JSON for `folder`."""
    out = subprocess.run([python, os.path.join(HERE, "dcp_load.py"), folder, "--procs", str(procs)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mount(shardfs, tag, mnt, config):
    os.makedirs(mnt, exist_ok=True)
    subprocess.run([shardfs, "mount", tag, mnt, "--format", "dcp", "--config", config], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def unmount(shardfs, mnt):
    subprocess.run([shardfs, "unmount", mnt], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(prog="bench/dcp_bench.py", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-1b", action="store_true", help="skip 1. (the 1B convert against cp -r)")
    ap.add_argument("--skip-python", action="store_true", help="skip 2. (against the Python way)")
    ap.add_argument("--skip-load", action="store_true", help="skip 3. (dcp.load of convert's folder against dcp.save's)")
    ap.add_argument("--skip-mount", action="store_true", help="skip 4. (dcp.load through the mount)")
    ap.add_argument("--check", action="store_true", help="compare the Python way's folder with convert's and the mount's")
    ap.add_argument("--cp-of", choices=("tag", "dcp"), default="tag",
                    help="1.: cp -r of the tag (default) or of a converted DCP folder (needs ~18 GB more disk)")
    ap.add_argument("--places", default="disk,tmpfs", help="2.: where to write (default disk,tmpfs)")
    ap.add_argument("--procs", type=int, default=2, help="3., 4.: dcp.load processes (default 2)")
    ap.add_argument("--work", default=os.path.join(REPO, "bench-out"))
    ap.add_argument("--tmpfs", default="/dev/shm")
    ap.add_argument("--shardfs", default=os.environ.get("SHARDFS_BIN", os.path.join(REPO, ".build/release/shardfs")))
    a = ap.parse_args()
    python = default_python()
    rows = []
    started = time.monotonic()

    # 1. The 1B tag: convert --format dcp against cp -r, bytes written per second.
    if not a.skip_1b:
        src, tag = os.path.join(a.work, "llama-3.2-1b-untied"), os.path.join(a.work, "train-tag-1b-tp4-dp2")
        make(python, a.shardfs, src, tag)
        config = os.path.join(src, "config.json")
        out = os.path.join(a.work, "dcp-bench-out")
        cp_src = tag
        if a.cp_of == "dcp":
            cp_src = os.path.join(a.work, "dcp-bench-1b-converted")
            shutil.rmtree(cp_src, ignore_errors=True)  # made again by every run: by the binary measured
            subprocess.run([a.shardfs, "convert", tag, cp_src, "--format", "dcp", "--config", config], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cp_bytes, tag_bytes = tree_bytes(cp_src), tree_bytes(tag)
        cp_rates, rates, rss, out_bytes, disk = [], [], [], 0, {"cp": [], "convert": []}
        for round in range(a.rounds):
            for which in (("cp", "convert") if round % 2 == 0 else ("convert", "cp")):
                shutil.rmtree(out, ignore_errors=True)
                warm(cp_src if which == "cp" else tag)
                load = loadavg()
                if which == "cp":
                    seconds, _, read = timed_io(["cp", "-r", cp_src, out])
                    cp_rates.append(cp_bytes / seconds / 1e9)
                else:
                    seconds, peak, read = timed_io([a.shardfs, "convert", tag, out, "--format", "dcp", "--config", config],
                                                   stderr=subprocess.DEVNULL)
                    out_bytes = tree_bytes(out)
                    rates.append(out_bytes / seconds / 1e9)
                    rss.append(peak)
                disk[which].append(read)
                log(f"1B round {round}: {which} {seconds:.2f} s, {read:.1f} GB read from storage (load average {load:.1f})")
        shutil.rmtree(out, ignore_errors=True)
        cp, conv = statistics.median(cp_rates), statistics.median(rates)
        what = f"the tag ({tag_bytes / 1e9:.1f} GB)" if a.cp_of == "tag" else f"a converted DCP folder ({cp_bytes / 1e9:.1f} GB)"
        rows.append((f"1B tag (TP4 DP2, {tag_bytes / 1e9:.1f} GB) -> DCP folder ({out_bytes / 1e9:.1f} GB, 8 shards) on disk, "
                     f"bytes written/s vs `cp -r` of {what} to the same disk, warm source",
                     f"{conv:.2f} GB/s ({runs(rates)}); read from storage {runs(disk['convert'], ' GB')}",
                     f"{cp:.2f} GB/s ({runs(cp_rates)}); read from storage {runs(disk['cp'], ' GB')}",
                     f"{conv / cp:.2f}x", f"{max(rss):.0f} MB"))
        benchlib.summary("dcp", f"1B training tag to DCP (`convert --format dcp`), bytes/s vs `cp -r` of {a.cp_of}",
                         f"{conv / cp:.2f}x", ">= 0.8x", benchlib.status(conv / cp, ">=", 0.8))
        benchlib.summary("dcp", "1B training tag to DCP: convert's peak RSS", f"{max(rss):.0f} MB", "< 256 MB",
                         benchlib.status(max(rss), "<=", 256))

    small_src, small = os.path.join(a.work, "llama-4layers-32k-untied"), os.path.join(a.work, "train-tag-4l32k-tp4-dp2")
    make(python, a.shardfs, small_src, small, layers=4, vocab=32000)
    small_config = os.path.join(small_src, "config.json")
    small_bytes = tree_bytes(small)
    convert_small = [a.shardfs, "convert", small, None, "--format", "dcp", "--config", small_config]
    export = [python, os.path.join(HERE, "python_dcp_export.py"), "--tag", small, "--config", small_config, "--out", None]

    # 2. Against the Python way, the small tag.
    if not a.skip_python:
        for place in a.places.split(","):
            root = os.path.join(a.work, "dcp-bench-python") if place == "disk" else os.path.join(a.tmpfs, "shardfs-dcp-python")
            py_times, py_rss, sh_times, sh_rss = [], [], [], []
            for round in range(a.rounds):
                for which in (("python", "shardfs") if round % 2 == 0 else ("shardfs", "python")):
                    shutil.rmtree(root, ignore_errors=True)
                    warm(small)
                    load = loadavg()
                    cmd = list(export if which == "python" else convert_small)
                    cmd[cmd.index(None)] = root
                    seconds, peak, _ = timed_io(cmd, stderr=subprocess.DEVNULL)
                    (py_times if which == "python" else sh_times).append(seconds)
                    (py_rss if which == "python" else sh_rss).append(peak)
                    log(f"python-way {place} round {round}: {which} {seconds:.2f} s, {peak:.0f} MB (load average {load:.1f})")
            shutil.rmtree(root, ignore_errors=True)
            py, sh = statistics.median(py_times), statistics.median(sh_times)
            rows.append((f"`convert --format dcp` vs the Python way (torch.load every file, merge, permute, dcp.save), "
                         f"{SMALL} ({small_bytes / 1e9:.1f} GB tag), to {place}",
                         f"{sh:.2f} s ({runs(sh_times)}), {max(sh_rss):.0f} MB", f"{py:.2f} s ({runs(py_times)}), {max(py_rss):.0f} MB",
                         f"{py / sh:.1f}x faster",
                         f"{max(sh_rss):.0f} vs {max(py_rss):.0f} MB"))
            benchlib.summary("dcp", f"training tag to DCP vs the Python way (load all, merge, dcp.save), {SMALL}, to {place}",
                             f"{py / sh:.1f}x faster", ">= 5x", benchlib.status(py / sh, ">=", 5))
            benchlib.summary("dcp", f"training tag to DCP, {SMALL}, to {place}: convert's and the Python way's peak RSS",
                             f"{max(sh_rss):.0f} vs {max(py_rss):.0f} MB", "< 256 MB", benchlib.status(max(sh_rss), "<=", 256))

    # The folders 3. and 4. load: convert's and the Python way's, of the small tag.
    converted, saved = os.path.join(a.work, "dcp-bench-small-converted"), os.path.join(a.work, "dcp-bench-small-python")
    if not (a.skip_load and a.skip_mount and not a.check):
        shutil.rmtree(converted, ignore_errors=True)  # made again by every run: by the binary measured
        cmd = list(convert_small)
        cmd[3] = converted
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not (a.skip_load and not a.check):
        if not os.path.exists(os.path.join(saved, ".metadata")):
            shutil.rmtree(saved, ignore_errors=True)
            cmd = list(export)
            cmd[-1] = saved
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    mnt = os.path.join(a.work, "dcp-bench-mnt")

    if a.check:
        check = [python, os.path.join(HERE, "python_dcp_export.py"), "--no-export", "--out", saved, "--check-against"]
        subprocess.run(check + [converted], check=True)
        mount(a.shardfs, small, mnt, small_config)
        try:
            subprocess.run(check + [mnt], check=True)
        finally:
            unmount(a.shardfs, mnt)

    def load_row(results):
        s = statistics.median(r["seconds"] for r in results)
        r = results[0]
        return s, (f"{s:.2f} s ({runs(x['seconds'] for x in results)}), {r['bytes'] / s / 1e9:.2f} GB/s, "
                   f"read {statistics.median(x['read'] for x in results) / 1e9:.1f} GB, "
                   f"{max(max(x['hwm_mb']) for x in results)} MB per process")

    # 3. dcp.load of convert's folder against dcp.save's.
    if not a.skip_load:
        got = {"converted": [], "saved": []}
        for round in range(a.rounds):
            for which in (("converted", "saved") if round % 2 == 0 else ("saved", "converted")):
                folder = converted if which == "converted" else saved
                warm(folder)
                load = loadavg()
                got[which].append(dcp_load(python, folder, a.procs))
                log(f"dcp.load round {round}: {which} {got[which][-1]['seconds']:.2f} s (load average {load:.1f})")
        c, ctext = load_row(got["converted"])
        s, stext = load_row(got["saved"])
        rows.append((f"`dcp.load` in {a.procs} processes (gloo, DTensor Shard(0)) of convert's folder (8 shards) vs "
                     f"dcp.save's folder (the Python way's, 1 file, whole tensors), {SMALL} ({got['saved'][0]['bytes'] / 1e9:.1f} GB), warm",
                     ctext, stext, f"{s / c:.2f}x", ""))
        benchlib.summary("dcp", f"`dcp.load` ({a.procs} processes) of convert's folder vs dcp.save's folder of the same state, warm",
                         f"{s / c:.2f}x", ">= 1.0x", benchlib.status(s / c, ">=", 1.0))

    # 4. dcp.load through the mount against convert's folder.
    if not a.skip_mount:
        got = {"converted": [], "mount": []}
        hwm, cpu = [], []
        for round in range(a.rounds):
            for which in (("converted", "mount") if round % 2 == 0 else ("mount", "converted")):
                if which == "converted":
                    warm(converted)
                    load = loadavg()
                    got[which].append(dcp_load(python, converted, a.procs))
                else:
                    warm(small)
                    mount(a.shardfs, small, mnt, small_config)
                    try:
                        load = loadavg()
                        got[which].append(dcp_load(python, mnt, a.procs))
                        hwm.append(daemon_hwm(mnt))
                        cpu.append(daemon_cpu(mnt))
                    finally:
                        unmount(a.shardfs, mnt)
                log(f"dcp.load round {round}: {which} {got[which][-1]['seconds']:.2f} s (load average {load:.1f})")
        m, mtext = load_row(got["mount"])
        c, ctext = load_row(got["converted"])
        rows.append((f"`dcp.load` in {a.procs} processes through `mount --format dcp` vs convert's folder, {SMALL}, warm (fresh mount each round)",
                     mtext, ctext, f"{c / m:.2f}x", f"{max(hwm):.0f} MB (daemon VmHWM), daemon CPU {runs(cpu, ' s')}"))
        benchlib.summary("dcp", f"`dcp.load` ({a.procs} processes) through `mount --format dcp` vs convert's folder, warm",
                         f"{c / m:.2f}x", ">= 0.8x", benchlib.status(c / m, ">=", 0.8))
        benchlib.summary("dcp", "DCP mount: the daemon's VmHWM", f"{max(hwm):.0f} MB")

    minutes = (time.monotonic() - started) / 60
    print(f"# dcp_bench.py, {time.strftime('%Y-%m-%d %H:%M')}, median of {a.rounds}, {minutes:.0f} min; "
          f"1-minute load average at the runs {min(LOADS, default=0):.1f} to {max(LOADS, default=0):.1f} (2 cores); "
          "warm: each run's input read whole just before it, page cache never dropped\n")
    print("| what | shardfs | baseline | ratio | memory |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
