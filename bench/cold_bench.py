#!/usr/bin/env python3
"""Cold start of a training job: every rank torch.loads its rank file, from the
files `shardfs convert` wrote and, alternately, through a fresh `shardfs mount`.

What a trn1.32xlarge node does when a job first starts: the page cache is cold
(dropped here: sync; echo 3 > /proc/sys/vm/drop_caches), and the 32 ranks of
one pipeline stage load their rank files MNT/model/dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt.
NxD's load_checkpoint (neuronx_distributed/trainer/checkpoint.py, _load) lets
the node's processes load num_workers=8 at a time: ranks 0-7, a rendezvous,
ranks 8-15, ... each rank one process doing torch.load(path, map_location="cpu").
The loader here does the same: per wave of --workers ranks, one forked process
per rank file (torch.load(weights_only=True), tensor bytes summed, result
dropped), and waits for the whole wave before the next.

Both sides are measured in every round, in alternating order (round 1:
converted then mount; round 2: mount then converted; ...). One measurement:
  1. mount side only: a fresh `shardfs mount SRC MNT <layout>` (headers only);
  2. the loader starts as a separate Python process (fresh memory), imports
     torch and runs torch.save/torch.load once on an in-memory file, untimed;
  3. sync; echo 3 > /proc/sys/vm/drop_caches (not with --warm);
  4. timed: the loader loads the files; counters are read before and after:
     sectors read of the block device(s) holding the source and the converted
     files (/sys/dev/block/MAJ:MIN/stat; with --latency-us, the disk under
     latencyfs), latencyfs read requests, and for the mount the daemon's
     /proc/PID/io read_bytes and VmHWM (read before unmounting).
A round fails the benchmark when the loader fails or the two sides load
different tensor bytes or file counts (or differ from `shardfs plan`).

The converted files are made once per source, layout, dtype and format, into
WORK/cold/converted-<hash> (written under a temporary name and renamed when
complete, so an interrupted convert is never reused).

--format xser: the loader loads, for every rank, P (the TensorReference
pickle; a stand-in class replaces torch_xla's, weights_only=False as NxD),
P.info.pt and every P.tensors/tensor_<tid>.pt, with --workers forked processes
over all those files (a pool: a worker takes the next file when done). NxD
itself does not gate xser loads by num_workers: all ranks load at once, each
its own tensor files one after another.

Output: one line per measurement on stderr; a markdown report (the exact
command line, every measurement, a summary of medians) on stdout, also saved
to WORK/results/cold-<time>.md; daemon, latencyfs and convert logs in
WORK/results/cold-logs-<time>/. Every mount made here (shardfs and latencyfs)
is unmounted on exit, also on error, Ctrl-C or SIGTERM. Needs root (for
drop_caches and FUSE) unless --warm.

Environment: PYTHON (the loader's python, with torch; default REPO/.venv/bin/python
as scripts/setup.sh makes it, else python3), SHARDFS_BIN (as --shardfs).
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

import benchlib  # bench/, beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_LAYOUT = "--tp-size 32 --pp-size 2 --kv-size-multiplier 4 --qkv-linear --fuse-qkv"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "bool": 1}


# =====================================================================
# loader (runs in a separate process under PYTHON; the only part that needs torch)
# =====================================================================

def _install_tensor_reference_standin():
    """xser's P pickles name torch_xla.utils.serialization.TensorReference:
    a stand-in module and class (only `tid`) so that P loads without torch_xla."""
    import types

    class TensorReference:
        def __init__(self, tid=None):
            self.tid = tid

        def __eq__(self, other):
            return type(other) is type(self) and other.tid == self.tid

        def __repr__(self):
            return f"TensorReference({self.tid})"

    names = ["torch_xla", "torch_xla.utils", "torch_xla.utils.serialization"]
    mods = [types.ModuleType(n) for n in names]
    mods[0].utils = mods[1]
    mods[1].serialization = mods[2]
    TensorReference.__module__ = names[2]
    mods[2].TensorReference = TensorReference
    for n, m in zip(names, mods):
        sys.modules[n] = m


def _tensor_bytes(obj):
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size(), 1
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    b = n = 0
    for v in items:
        vb, vn = _tensor_bytes(v)
        b += vb
        n += vn
    return b, n


def _io_read_bytes(pid="self"):
    """Bytes this process made the kernel fetch from a block device
    (/proc/PID/io read_bytes; reads through FUSE count for the daemon behind it)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _load_one(item):
    """item = (kind, path); kind t: torch.load(weights_only=True), r: an xser
    reference pickle (weights_only=False, as NxD loads it)."""
    import torch
    kind, path = item
    t0 = time.perf_counter()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=(kind != "r"))
        b, n = _tensor_bytes(obj)
        del obj
        return {"path": path, "bytes": b, "tensors": n, "seconds": time.perf_counter() - t0,
                "pid": os.getpid(), "read_bytes": _io_read_bytes()}
    except BaseException as e:  # reported, then the benchmark fails
        return {"path": path, "error": f"{type(e).__name__}: {e}"}


def _wave_child(item, conn):
    conn.send(_load_one(item))
    conn.close()


def _run_waves(items, workers, ctx):
    """NxD's _load: ranks in waves of `workers`, one process per rank file, a
    rendezvous (all of the wave done) before the next wave."""
    results = []
    for i in range(0, len(items), workers):
        procs = []
        for item in items[i:i + workers]:
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_wave_child, args=(item, w), daemon=True)
            p.start()
            w.close()
            procs.append((p, r, item))
        for p, r, item in procs:
            try:
                res = r.recv()
            except EOFError:
                p.join()
                res = {"path": item[1], "error": f"loader process died (exit code {p.exitcode})"}
            p.join()
            results.append(res)
    return results


def loader_main(argv):
    """cold_bench.py _load MODE WORKERS LISTFILE | _check LISTFILE (internal)."""
    import multiprocessing
    import io
    import torch
    _install_tensor_reference_standin()
    if argv[0] == "_check":
        return _check_main(argv[1])
    mode, workers, listfile = argv[1], int(argv[2]), argv[3]
    with open(listfile) as f:
        items = [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line.strip()]
    # Untimed warm-up: torch.save/torch.load code paths (and their library
    # pages) in memory before the page cache is dropped.
    buf = io.BytesIO()
    torch.save({"w": torch.ones(64, 64, dtype=torch.bfloat16), "v": torch.zeros(8)}, buf)
    buf.seek(0)
    _tensor_bytes(torch.load(buf, map_location="cpu", weights_only=True))
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(workers) if mode == "pool" else None
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 3
    # read_bytes: a forked rank process starts at 0; a pool worker from its value now
    base = {p.pid: _io_read_bytes(p.pid) for p in pool._pool} if pool is not None else {}
    t0 = time.perf_counter()
    if pool is not None:
        results = list(pool.imap_unordered(_load_one, items, chunksize=1))
    else:
        results = _run_waves(items, workers, ctx)
    seconds = time.perf_counter() - t0
    if pool is not None:
        pool.close()
        pool.join()
    errors = [f"{r['path']}: {r['error']}" for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    last = {}
    for r in ok:
        last[r["pid"]] = max(last.get(r["pid"], 0), r["read_bytes"])
    read_bytes = sum(v - base.get(pid, 0) for pid, v in last.items())
    print(json.dumps({
        "seconds": seconds,
        "tensor_bytes": sum(r["bytes"] for r in ok),
        "tensors": sum(r["tensors"] for r in ok),
        "files": len(ok),
        "slowest_file_s": max((r["seconds"] for r in ok), default=0),
        "read_bytes": read_bytes,
        "errors": errors,
    }), flush=True)
    return 1 if errors else 0


def _same(a, b, where, out):
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            out.append(f"{where}: tensor vs {type(b).__name__}")
        elif a.dtype != b.dtype or a.shape != b.shape:
            out.append(f"{where}: {a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}")
        elif not torch.equal(a, b):
            out.append(f"{where}: values differ")
        return 1
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            out.append(f"{where}: keys differ ({len(a)} vs {len(b)})")
            return 0
        return sum(_same(a[k], b[k], f"{where}[{k!r}]", out) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        if len(a) != len(b):
            out.append(f"{where}: lengths differ")
            return 0
        return sum(_same(x, y, f"{where}[{i}]", out) for i, (x, y) in enumerate(zip(a, b)))
    if type(a) is not type(b) or a != b:
        out.append(f"{where}: {a!r} vs {b!r}")
    return 0


def _check_main(listfile):
    import torch
    pairs = 0
    tensors = 0
    bad = []
    with open(listfile) as f:
        for line in f:
            if not line.strip():
                continue
            kind, a, b = line.rstrip("\n").split("\t")
            wo = kind != "r"
            x = torch.load(a, map_location="cpu", weights_only=wo)
            y = torch.load(b, map_location="cpu", weights_only=wo)
            tensors += _same(x, y, os.path.basename(a), bad)
            pairs += 1
    print(json.dumps({"pairs": pairs, "tensors": tensors, "mismatches": bad[:20], "mismatch_count": len(bad)}), flush=True)
    return 1 if bad else 0


# =====================================================================
# orchestrator (stdlib only)
# =====================================================================

class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def default_python():
    if os.environ.get("PYTHON"):
        return os.environ["PYTHON"]
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else "python3"


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/cold_bench.py",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", metavar="DIR",
                    help="HF checkpoint (default WORK/llama-3.2-1b; when missing it is created with "
                         "bench/make_checkpoint.py --out DIR: Llama-3.2-1B shapes, random bf16, ~2.5 GB)")
    ap.add_argument("--layout", default=DEFAULT_LAYOUT, metavar='"FLAGS"',
                    help=f'shardfs layout flags, one string, for convert and mount (default "{DEFAULT_LAYOUT}"); '
                         "--dtype and --format are separate options")
    ap.add_argument("--pp-rank", type=int, default=0, metavar="N",
                    help="pipeline rank whose files are loaded: all its TP ranks, one per rank (default 0)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="shardfs --dtype of the files (default bfloat16)")
    ap.add_argument("--format", choices=["pt", "xser"], default="pt",
                    help="shardfs --format: pt (one torch.save zip per rank) or xser (P, P.info.pt and one "
                         "file per tensor in P.tensors/) (default pt)")
    ap.add_argument("--rounds", type=int, default=5, metavar="N",
                    help="rounds; each measures both sides, alternating which goes first (default 5)")
    ap.add_argument("--warm", action="store_true",
                    help="do not drop the page cache; one untimed warm-up load of each side first "
                         "(each measurement still gets a fresh mount)")
    ap.add_argument("--single", action="store_true",
                    help="one reader loads one rank (tp rank 0 of --pp-rank) instead of every rank")
    ap.add_argument("--workers", type=int, default=8, metavar="N",
                    help="ranks loading at once (NxD's num_workers; default 8); with --format xser, "
                         "processes loading files")
    ap.add_argument("--latency-us", type=int, metavar="N",
                    help="serve both the source checkpoint and the converted files through latencyfs "
                         "(bench/latencyfs.c, compiled into WORK on first use), which delays every FUSE "
                         "read request by N microseconds, to play FSx-like storage (default: no latencyfs)")
    ap.add_argument("--shardfs", metavar="BIN",
                    help="shardfs binary (default $SHARDFS_BIN, else REPO/.build/release/shardfs copied to "
                         "WORK/shardfs-bench-cold, so that a rebuild during the run changes nothing)")
    ap.add_argument("--mount-flags", default="", metavar='"FLAGS"',
                    help='extra flags for `shardfs mount` only, e.g. "--page-cache" or "--max-read-kib 1024"')
    ap.add_argument("--work", metavar="DIR", default=os.path.join(REPO, "bench-out"),
                    help="scratch + results directory (default REPO/bench-out)")
    ap.add_argument("--check", action="store_true",
                    help="once, before the rounds: load two ranks (first and last tp rank) from the converted "
                         "files and through a mount and compare every tensor (torch.equal)")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if a.workers < 1:
        ap.error("--workers must be at least 1")
    if a.pp_rank < 0:
        ap.error("--pp-rank must be >= 0")
    if a.latency_us is not None and a.latency_us < 0:
        ap.error("--latency-us must be >= 0")
    a.layout_flags = shlex.split(a.layout)
    for f in a.layout_flags:
        if f.split("=")[0] in ("--dtype", "--format"):
            ap.error(f"--layout: pass {f.split('=')[0]} as an option of its own, not inside --layout")
    a.mount_flag_list = shlex.split(a.mount_flags)
    return a


def is_mounted(path):
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 1 and parts[1].replace("\\040", " ") == path:
                return True
    return False


def read_text(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


class BlockDevice:
    """Sectors read from the block device holding a path (None when the path
    is not on a block device, e.g. tmpfs, NFS, overlay)."""

    def __init__(self, path):
        st = os.stat(path)
        self.id = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        self.stat = f"/sys/dev/block/{self.id}/stat"
        if not os.path.exists(self.stat):
            self.stat = None
            self.name = f"{self.id} (not a block device)"
        else:
            uevent = read_text(f"/sys/dev/block/{self.id}/uevent", "")
            name = [l.split("=", 1)[1] for l in uevent.splitlines() if l.startswith("DEVNAME=")]
            self.name = f"/dev/{name[0]} ({self.id})" if name else self.id
            ra = read_text(f"/sys/dev/block/{self.id}/bdi/read_ahead_kb") or read_text(f"/sys/dev/block/{self.id}/../bdi/read_ahead_kb")
            if ra:
                self.name += f", read_ahead_kb {ra.strip()}"

    def bytes_read(self):
        if self.stat is None:
            return None
        return int(read_text(self.stat).split()[2]) * 512


def proc_io_read_bytes(pid):
    for line in (read_text(f"/proc/{pid}/io", "") or "").splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return None


def cache_drops():
    """How often anyone wrote to /proc/sys/vm/drop_caches since boot."""
    for line in (read_text("/proc/vmstat", "") or "").splitlines():
        if line.startswith("drop_pagecache "):
            return int(line.split()[1])
    return None


def proc_vmhwm_kib(pid):
    for line in (read_text(f"/proc/{pid}/status", "") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def shardfs_daemon_pid(mnt):
    """The daemon is `shardfs mount SRC MNT ... --foreground --ready-fd 3`."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        raw = read_text(f"/proc/{pid}/cmdline")
        if not raw:
            continue
        args = raw.split("\0")
        if "mount" in args and mnt in args and "--foreground" in args:
            return int(pid)
    return None


def wait_pid_gone(pid, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not os.path.exists(f"/proc/{pid}") or (read_text(f"/proc/{pid}/stat", "") or "").split(") ")[-1][:1] == "Z":
            return True
        time.sleep(0.05)
    return False


class Bench:
    def __init__(self, args):
        self.a = args
        self.python = default_python()
        self.work = os.path.abspath(args.work)
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.results = os.path.join(self.work, "results")
        self.logs = os.path.join(self.results, f"cold-logs-{self.stamp}")
        self.cold = os.path.join(self.work, "cold")
        tag = f"{self.stamp}-{os.getpid()}"
        self.mnt = os.path.join(self.cold, f"mnt-{tag}")
        self.lat_src_mnt = os.path.join(self.cold, f"lat-src-{tag}")
        self.lat_conv_mnt = os.path.join(self.cold, f"lat-conv-{tag}")
        self.latencyfs = {}      # mount point -> Popen
        self.loader = None       # Popen
        self.rows = []           # per measurement
        self.notes = []
        self.daemon_pid = None
        self.drops = None

    # ------------------------------------------------------------ setup
    def run(self, argv):
        a = self.a
        if not os.path.exists("/dev/fuse"):
            raise BenchError("/dev/fuse is missing")
        if not a.warm and os.geteuid() != 0:
            raise BenchError("dropping the page cache needs root (or pass --warm)")
        os.makedirs(self.logs, exist_ok=True)
        os.makedirs(self.cold, exist_ok=True)
        probe = subprocess.run([self.python, "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            raise BenchError(f"{self.python} cannot import torch (set PYTHON): {probe.stderr.decode()[-300:]}")
        self.bin = self.shardfs_binary()
        self.src = os.path.realpath(self.source())
        self.plan = self.shardfs_plan()
        self.converted = self.converted_tree()
        self.devices = {}
        for p in (self.src, self.converted):
            d = BlockDevice(p)
            self.devices.setdefault(d.id, d)
        if any(d.stat is None for d in self.devices.values()):
            self.notes.append("disk bytes: " + ", ".join(d.name for d in self.devices.values() if d.stat is None)
                              + " has no /sys/dev/block stat; disk bytes not measured there")
        serve_src, serve_conv = self.src, self.converted
        if a.latency_us is not None:
            serve_src = self.mount_latencyfs(self.src, self.lat_src_mnt)
            serve_conv = self.mount_latencyfs(self.converted, self.lat_conv_mnt)
        self.serve_src, self.serve_conv = serve_src, serve_conv
        os.makedirs(self.mnt, exist_ok=True)

        busy = self.cpu_busy_pct()
        log(f"== shardfs {self.bin}; source {self.src}; converted {self.converted}; loader {self.python}; "
            f"machine busy {busy}% of {os.cpu_count()} CPUs before the run")
        self.busy_before = busy
        self.drops = cache_drops()
        if a.check:
            self.check()
        if a.warm:
            log("== warm-up (untimed): one load of each side")
            for side in ("converted", "mount"):
                self.measure(side, 0, timed=False)
        for r in range(1, a.rounds + 1):
            order = ("converted", "mount") if r % 2 == 1 else ("mount", "converted")
            got = {}
            for pos, side in enumerate(order, 1):
                row = self.measure(side, r, timed=True)
                row["order"] = pos
                got[side] = row
                self.rows.append(row)
            c, m = got["converted"], got["mount"]
            if (c["tensor_bytes"], c["files"]) != (m["tensor_bytes"], m["files"]):
                raise BenchError(f"round {r}: the sides loaded different data: converted {c['tensor_bytes']} tensor bytes "
                                 f"in {c['files']} files, mount {m['tensor_bytes']} in {m['files']}")
        return self.report(argv)

    def shardfs_binary(self):
        a = self.a
        b = a.shardfs or os.environ.get("SHARDFS_BIN")
        if b:
            if not os.access(b, os.X_OK):
                raise BenchError(f"no shardfs binary at {b}")
            return os.path.abspath(b)
        built = os.path.join(REPO, ".build", "release", "shardfs")
        dest = os.path.join(self.work, "shardfs-bench-cold")
        if os.access(built, os.X_OK):
            if not os.path.exists(dest) or not same_file_content(built, dest):
                tmp = f"{dest}.tmp-{os.getpid()}"
                shutil.copy2(built, tmp)
                os.replace(tmp, dest)  # a new inode: a running copy is never overwritten
                log(f"== copied {built} to {dest}")
        elif not os.access(dest, os.X_OK):
            raise BenchError(f"no shardfs binary: run 'swift build -c release' in {REPO}, or pass --shardfs / set SHARDFS_BIN")
        return dest

    def source(self):
        a = self.a
        src = os.path.abspath(a.src or os.path.join(self.work, "llama-3.2-1b"))
        if not os.path.exists(os.path.join(src, "config.json")):
            if os.path.exists(src):
                raise BenchError(f"{src} exists but holds no config.json; remove it or pass --src")
            log(f"== creating {src} (Llama-3.2-1B shapes, random bf16, ~2.5 GB)")
            self.run_logged([self.python, os.path.join(HERE, "make_checkpoint.py"), "--out", src], "make_checkpoint.log")
        return src

    def run_logged(self, cmd, logname, env=None):
        path = os.path.join(self.logs, logname)
        with open(path, "a") as f:
            f.write(f"$ {shlex.join(cmd)}\n")
            f.flush()
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if p.returncode != 0:
            tail = "".join((read_text(path, "") or "").splitlines(True)[-8:])
            raise BenchError(f"failed ({p.returncode}): {shlex.join(cmd)}\n{tail}")

    def layout(self):
        return self.a.layout_flags + ["--dtype", self.a.dtype, "--format", self.a.format]

    def shardfs_plan(self):
        p = subprocess.run([self.bin, "plan", self.src] + self.layout() + ["--json"], capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"shardfs plan failed: {p.stderr.strip()}")
        plan = json.loads(p.stdout)
        files = sorted((f for f in plan["files"] if f["ppRank"] == self.a.pp_rank), key=lambda f: f["tpRank"])
        if not files:
            raise BenchError(f"--pp-rank {self.a.pp_rank}: the layout has pp ranks 0-{plan['layout']['ppSize'] - 1}")
        if self.a.single:
            files = files[:1]
        self.plan_all = plan
        self.rank_files = files
        return plan

    def items(self, root):
        """(kind, path) to load, in rank order; kind r = xser reference pickle."""
        out = []
        for f in self.rank_files:
            if self.a.format == "pt":
                out.append(("t", os.path.join(root, f["path"])))
            else:
                out.append(("r", os.path.join(root, f["path"])))
                out.append(("t", os.path.join(root, f["info"]["path"])))
                out.extend(("t", os.path.join(root, t["file"]["path"])) for t in f["tensors"])
        return out

    def expected_tensor_bytes(self):
        total = 0
        for f in self.rank_files:
            for t in f["tensors"]:
                if t["dtype"] not in DTYPE_BYTES:
                    return None
                n = DTYPE_BYTES[t["dtype"]]
                for d in t["shape"]:
                    n *= d
                total += n
        return total

    def converted_tree(self):
        """WORK/cold/converted-<hash>: made once per source, layout, dtype, format."""
        ident = {"src": self.src, "layout": self.a.layout_flags, "dtype": self.a.dtype, "format": self.a.format,
                 "files": sorted((n, os.stat(os.path.join(self.src, n)).st_size, os.stat(os.path.join(self.src, n)).st_mtime_ns)
                                 for n in os.listdir(self.src) if n.endswith((".safetensors", ".json")))}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        final = os.path.join(self.cold, f"converted-{h}")
        for n in os.listdir(self.cold):  # leftovers of interrupted converts
            if n.startswith(f"converted-{h}.tmp-"):
                shutil.rmtree(os.path.join(self.cold, n), ignore_errors=True)
        if not os.path.isdir(final):
            tmp = f"{final}.tmp-{os.getpid()}"
            log(f"== shardfs convert into {final} ({' '.join(self.layout())})")
            t0 = time.time()
            self.run_logged([self.bin, "convert", self.src, tmp] + self.layout(), "convert.log")
            with open(os.path.join(tmp, "cold-bench.json"), "w") as f:
                json.dump(ident, f, indent=1)
            self.verify_sizes(tmp, self.plan_all["files"])
            os.rename(tmp, final)
            log(f"   converted in {time.time() - t0:.1f} s")
        else:
            self.verify_sizes(final, self.rank_files)
        return final

    def verify_sizes(self, root, files):
        for f in files:
            want = [(f["path"], f["size"])]
            if self.a.format == "xser":
                want.append((f["info"]["path"], f["info"]["size"]))
                want.extend((t["file"]["path"], t["file"]["size"]) for t in f["tensors"])
            for path, size in want:
                p = os.path.join(root, path)
                got = os.stat(p).st_size if os.path.exists(p) else None
                if got != size:
                    raise BenchError(f"{p}: {got} bytes, shardfs plan says {size}; remove {root} to convert again")

    # ------------------------------------------------------------ mounts
    def latencyfs_binary(self):
        src = os.path.join(HERE, "latencyfs.c")
        out = os.path.join(self.work, "latencyfs")
        if not os.path.exists(out) or os.stat(out).st_mtime < os.stat(src).st_mtime:
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
            if flags.returncode != 0:
                raise BenchError("pkg-config finds no fuse3 (apt-get install libfuse3-dev pkg-config)")
            tmp = f"{out}.tmp-{os.getpid()}"
            self.run_logged(["cc", "-O2", "-o", tmp, src] + flags.stdout.split(), "latencyfs-build.log")
            os.replace(tmp, out)
            log(f"== compiled {out}")
        return out

    def mount_latencyfs(self, source, mnt):
        binary = self.latencyfs_binary()
        os.makedirs(mnt, exist_ok=True)
        env = dict(os.environ, LATENCYFS_SOURCE=source, LATENCYFS_DELAY_US=str(self.a.latency_us))
        logf = open(os.path.join(self.logs, f"latencyfs-{os.path.basename(mnt)}.log"), "a")
        p = subprocess.Popen([binary, mnt, "-f", "-o", "ro,fsname=latencyfs,max_threads=32"],
                             env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        logf.close()
        self.latencyfs[mnt] = p
        deadline = time.time() + 10
        while not is_mounted(mnt):
            if p.poll() is not None or time.time() > deadline:
                raise BenchError(f"latencyfs did not mount {source} at {mnt} (see {self.logs})")
            time.sleep(0.02)
        st = os.stat(mnt)
        ra = read_text(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
        bg = read_text(f"/sys/fs/fuse/connections/{os.minor(st.st_dev)}/max_background")
        self.latencyfs_kernel = f"kernel read_ahead_kb {ra.strip() if ra else '?'}" \
            + (f", FUSE max_background {bg.strip()}" if bg else "")
        log(f"== latencyfs {self.a.latency_us} us per read: {source} at {mnt} ({self.latencyfs_kernel})")
        return mnt

    def latencyfs_stats(self):
        """{mount: (requests, bytes)} of every latencyfs instance."""
        out = {}
        for mnt in self.latencyfs:
            s = (read_text(os.path.join(mnt, ".latencyfs-stats"), "") or "").split()
            out[mnt] = (int(s[1]), int(s[3])) if len(s) >= 4 else (0, 0)
        return out

    def shardfs_mount(self, name):
        if is_mounted(self.mnt):
            self.shardfs_unmount()
        cmd = [self.bin, "mount", self.serve_src, self.mnt] + self.layout() + self.a.mount_flag_list \
            + ["--log-file", os.path.join(self.logs, f"daemon-{name}.log")]
        self.run_logged(cmd, "mount.log")
        pid = shardfs_daemon_pid(self.mnt)
        if pid is None:
            raise BenchError(f"mounted, but no process is `shardfs mount ... {self.mnt} ... --foreground`")
        self.daemon_pid = pid
        return pid

    def shardfs_unmount(self):
        pid = self.daemon_pid or shardfs_daemon_pid(self.mnt)
        if is_mounted(self.mnt):
            with open(os.path.join(self.logs, "unmount.log"), "a") as f:
                if subprocess.run([self.bin, "unmount", self.mnt], stdout=f, stderr=f).returncode != 0:
                    subprocess.run(["fusermount3", "-u", "-z", self.mnt], stdout=f, stderr=f)
        if pid is not None and not wait_pid_gone(pid):
            log(f"warning: shardfs daemon {pid} still running 10 s after unmount")
        self.daemon_pid = None

    def unmount_latencyfs(self, mnt):
        p = self.latencyfs.pop(mnt)
        if is_mounted(mnt):
            if subprocess.run(["fusermount3", "-u", mnt], capture_output=True).returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.terminate()
            p.wait(timeout=5)

    def cleanup(self):
        if self.loader is not None and self.loader.poll() is None:
            try:
                os.killpg(self.loader.pid, signal.SIGKILL)
            except OSError:
                pass
            self.loader.wait()
        if hasattr(self, "bin"):
            self.shardfs_unmount()
        for mnt in list(self.latencyfs):
            self.unmount_latencyfs(mnt)
        left = [m for m in (self.mnt, self.lat_src_mnt, self.lat_conv_mnt) if is_mounted(m)]
        for m in left:
            log(f"!! {m} is STILL MOUNTED; run: fusermount3 -u -z {m}")
        for m in (self.mnt, self.lat_src_mnt, self.lat_conv_mnt):
            if m not in left:
                try:
                    os.rmdir(m)
                except OSError:
                    pass

    # ------------------------------------------------------------ measuring
    @staticmethod
    def cpu_busy_pct():
        def ticks():
            v = [int(x) for x in read_text("/proc/stat").splitlines()[0].split()[1:9]]
            return sum(v) - v[3] - v[4], sum(v)
        b0, t0 = ticks()
        time.sleep(1)
        b1, t1 = ticks()
        return round(100 * (b1 - b0) / max(1, t1 - t0))

    def start_loader(self, items, mode):
        listfile = os.path.join(self.logs, "files.txt")
        with open(listfile, "w") as f:
            f.writelines(f"{k}\t{p}\n" for k, p in items)
        with open(os.path.join(self.logs, "loader.log"), "a") as err:
            self.loader = subprocess.Popen(
                [self.python, os.path.abspath(__file__), "_load", mode, str(self.a.workers if not self.a.single else 1), listfile],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        line = self.loader.stdout.readline().strip()
        if line != "ready":
            self.loader.wait()
            raise BenchError(f"the loader did not start (see {self.logs}/loader.log)")

    def finish_loader(self):
        self.loader.stdin.write("go\n")
        self.loader.stdin.flush()
        out = self.loader.stdout.readline()
        rc = self.loader.wait()
        self.loader = None
        try:
            res = json.loads(out)
        except ValueError:
            raise BenchError(f"the loader failed (exit {rc}; see {self.logs}/loader.log)")
        if res["errors"] or rc != 0:
            raise BenchError(f"the loader failed (exit {rc}): " + "; ".join(res["errors"][:5]))
        return res

    def disk_bytes(self):
        vals = [d.bytes_read() for d in self.devices.values()]
        return None if any(v is None for v in vals) else sum(vals)

    def measure(self, side, rnd, timed):
        a = self.a
        name = f"r{rnd}-{side}" if timed else f"warmup-{side}"
        pid = None
        if side == "mount":
            pid = self.shardfs_mount(name)
            root = self.mnt
        else:
            root = self.serve_conv
        mode = "pool" if a.format == "xser" else "waves"
        self.start_loader(self.items(root), mode)
        if not a.warm:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            self.drops = cache_drops()
        lat_pids = [p.pid for p in self.latencyfs.values()]
        d0, l0 = self.disk_bytes(), self.latencyfs_stats()
        io0 = proc_io_read_bytes(pid) if pid else None
        lio0 = [proc_io_read_bytes(p) or 0 for p in lat_pids]
        res = self.finish_loader()
        d1, l1 = self.disk_bytes(), self.latencyfs_stats()
        lio1 = [proc_io_read_bytes(p) or 0 for p in lat_pids]
        drops = cache_drops()
        foreign = 0 if drops is None or self.drops is None else drops - self.drops
        self.drops = drops
        row = {"round": rnd, "side": side, "seconds": res["seconds"], "tensor_bytes": res["tensor_bytes"],
               "files": res["files"], "tensors": res["tensors"], "slowest_file_s": res["slowest_file_s"],
               "disk_bytes": None if d0 is None or d1 is None else d1 - d0,
               "lat_reqs": sum(l1[m][0] - l0[m][0] for m in l1) if l1 else None,
               "lat_bytes": sum(l1[m][1] - l0[m][1] for m in l1) if l1 else None,
               "loader_read": res["read_bytes"], "latencyfs_read": sum(lio1) - sum(lio0),
               "daemon_read": None, "daemon_hwm_kib": None, "foreign_drops": foreign}
        if foreign and timed:
            self.notes.append(f"round {rnd}, {side}: another process dropped the page cache {foreign} time(s) "
                              + ("since the previous measurement" if a.warm else "during the load")
                              + " (/proc/vmstat drop_pagecache); marked ⚠")
        if pid:
            io1 = proc_io_read_bytes(pid)
            row["daemon_read"] = None if io0 is None or io1 is None else io1 - io0
            row["daemon_hwm_kib"] = proc_vmhwm_kib(pid)
            self.shardfs_unmount()
        row["proc_read"] = row["loader_read"] + row["latencyfs_read"] + (row["daemon_read"] or 0)
        expect = self.expected_tensor_bytes()
        if expect is not None and res["tensor_bytes"] != expect:
            raise BenchError(f"{name}: loaded {res['tensor_bytes']} tensor bytes, shardfs plan says {expect}")
        if res["files"] != len(self.items(root)):
            raise BenchError(f"{name}: loaded {res['files']} files of {len(self.items(root))}")
        gbps = res["tensor_bytes"] / res["seconds"] / 1e9
        row["gbps"] = gbps
        log(f"   {name}: {res['seconds']:.3f} s, {gbps:.2f} GB/s, {res['tensor_bytes'] / 1e6:.1f} MB in {res['files']} files"
            f"; storage reads {fmt_mb(row['proc_read'])} MB (disk device {fmt_mb(row['disk_bytes'])} MB)"
            + (f"; latencyfs {row['lat_reqs']} reads {fmt_mb(row['lat_bytes'])} MB" if row["lat_reqs"] is not None else "")
            + (f"; daemon read {fmt_mb(row['daemon_read'])} MB, VmHWM {row['daemon_hwm_kib'] // 1024} MiB" if pid else "")
            + (f"; ⚠ page cache dropped {foreign}x by another process" if foreign else ""))
        return row

    def check(self):
        picks = [self.rank_files[0]] + ([self.rank_files[-1]] if len(self.rank_files) > 1 else [])
        saved = self.rank_files
        self.rank_files = picks
        try:
            self.shardfs_mount("check")
            conv, mnt = self.items(self.serve_conv), self.items(self.mnt)
            listfile = os.path.join(self.logs, "check.txt")
            with open(listfile, "w") as f:
                f.writelines(f"{k}\t{p}\t{q}\n" for (k, p), (_, q) in zip(conv, mnt))
            p = subprocess.run([self.python, os.path.abspath(__file__), "_check", listfile], capture_output=True, text=True)
            self.shardfs_unmount()
        finally:
            self.rank_files = saved
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"--check failed to run: {p.stderr.strip()[-500:]}")
        if p.returncode != 0 or res["mismatch_count"]:
            raise BenchError(f"--check: converted and mounted files differ: {res['mismatches']}")
        ranks = ", ".join(os.path.basename(f["path"]) for f in picks)
        msg = f"--check: {res['tensors']} tensors in {res['pairs']} files of {ranks} equal (torch.equal) converted vs mount"
        log(f"== {msg}")
        self.notes.append(msg)

    # ------------------------------------------------------------ report
    def report(self, argv):
        a = self.a
        rows = self.rows
        by = {s: [r for r in rows if r["side"] == s] for s in ("converted", "mount")}
        med = {s: statistics.median(r["gbps"] for r in by[s]) for s in by}
        per_round = [m["gbps"] / c["gbps"] for c, m in zip(by["converted"], by["mount"])]

        def per_byte(side, key):
            v = [r[key] / r["tensor_bytes"] for r in by[side] if r[key] is not None and r["tensor_bytes"]]
            return f"{statistics.median(v):.2f}" if v else "-"

        hwm = max((r["daemon_hwm_kib"] or 0) for r in by["mount"])
        first = rows[0]
        kind = ("warm" if a.warm else "cold") + (f", {a.dtype}" if a.dtype else "") + (", xser" if a.format == "xser" else "") \
            + (", one file" if a.single else "") + (f", {a.latency_us} µs per read" if a.latency_us is not None else "")
        target = 0.5 if a.single else 0.8
        ratio_of_medians = med["mount"] / med["converted"]
        benchlib.summary("mount", f"a job's first load ({kind}): NxD's `load_checkpoint` waves through the mount vs converted files",
                         f"{ratio_of_medians:.2f}x", f">= {target}x", benchlib.status(ratio_of_medians, ">=", target))
        benchlib.summary("mount", f"daemon peak RSS in that load ({kind})", f"{hwm / 1024:.0f} MiB", "< 256 MB", benchlib.status(hwm / 1024, "<=", 244))
        ranks = "tp rank 0" if a.single else f"all {len(self.rank_files)} tp ranks"
        what = f"{first['files']} files ({ranks} of pp rank {a.pp_rank}), {first['tensor_bytes'] / 1e9:.3f} GB of tensors"
        cmdline = shlex.join([sys.argv[0]] + argv)
        if os.environ.get("PYTHON"):
            cmdline = f"PYTHON={shlex.quote(os.environ['PYTHON'])} {cmdline}"
        if os.environ.get("SHARDFS_BIN") and not a.shardfs:
            cmdline = f"SHARDFS_BIN={shlex.quote(os.environ['SHARDFS_BIN'])} {cmdline}"
        loading = (f"{1 if a.single else a.workers} forked loader process{'' if a.single else 'es'} over all files, each `torch.load` of P "
                   f"(stand-in TensorReference, weights_only=False), P.info.pt and P.tensors/tensor_*.pt (weights_only=True)"
                   if a.format == "xser" else
                   f"NxD's waves: {1 if a.single else a.workers} ranks at a time, one forked process per rank file "
                   f"(`torch.load(path, map_location=\"cpu\", weights_only=True)`), all of a wave done before the next")
        mem = int(read_text("/proc/meminfo").split()[1]) / 1048576
        L = []
        L.append(f"### Cold start: converted files vs `shardfs mount` ({self.stamp})")
        L.append("")
        L.append(f"command: `{cmdline}`  ")
        L.append(f"shardfs: `{self.bin}` ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(os.stat(self.bin).st_mtime))}); "
                 f"loader python: `{self.python}`  ")
        L.append(f"source: `{self.src}`; converted: `{self.converted}`; layout `{' '.join(self.layout())}`"
                 + (f"; mount flags `{a.mount_flags}`" if a.mount_flags else "") + "  ")
        L.append(f"load: {what}; {loading}  ")
        L.append(("warm: no page-cache drop, after one untimed load of each side" if a.warm else
                  "cold: per measurement, mount (mount side; it reads headers only), start the loader (torch imported, "
                  "torch.save/load run once in memory), then `sync; echo 3 > /proc/sys/vm/drop_caches`, then the timed load")
                 + f"; a fresh mount per measurement; {a.rounds} round(s), alternating which side goes first  ")
        if a.latency_us is not None:
            L.append(f"storage: source and converted files each behind latencyfs (bench/latencyfs.c), {a.latency_us} µs "
                     f"per read request, `-o max_threads=32`, {self.latencyfs_kernel}; disk bytes are those of the disk under it  ")
        L.append(f"disk: {', '.join(d.name for d in self.devices.values())} (sectors read × 512, whole device: "
                 f"includes anything else reading it meanwhile)  ")
        L.append(f"machine: {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, kernel {os.uname().release}; CPU busy before the run "
                 f"(others' load) {self.busy_before}%; load average now {' '.join(read_text('/proc/loadavg').split()[:3])}")
        L.append("")
        L.append("| converted GB/s | mount GB/s | mount/converted (of medians) | median of per-round ratios | "
                 "storage B per tensor B, converted | ..., mount | disk B per tensor B, converted | ..., mount | daemon VmHWM max |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        L.append(f"| {med['converted']:.2f} | {med['mount']:.2f} | {med['mount'] / med['converted']:.2f}x | "
                 f"{statistics.median(per_round):.2f}x | {per_byte('converted', 'proc_read')} | {per_byte('mount', 'proc_read')} | "
                 f"{per_byte('converted', 'disk_bytes')} | {per_byte('mount', 'disk_bytes')} | {hwm / 1024:.0f} MiB |")
        L.append("")
        lat = a.latency_us is not None
        L.append(f"Medians of {a.rounds} round(s); GB = 10^9 bytes of tensors (numel × element size), per second of loading "
                 "(timed in the loader, from the start of the first rank process to the end of the last). "
                 "*Storage* bytes: `/proc/PID/io` read_bytes of the processes that read the storage during the load "
                 "(the loader's rank processes, the shardfs daemon"
                 + (", the latencyfs daemons" if lat else "") + "): what the load itself fetched. *Disk* bytes: sectors "
                 "read by the whole device meanwhile, including other processes (a build running alongside re-reads its "
                 "files after each cache drop).")
        L.append("")
        L.append("| round | side | order | seconds | GB/s | slowest file s | files | storage MB | storage/tensor B | disk MB | disk/tensor B |"
                 + (" latencyfs reads | latencyfs MB |" if lat else "") + " daemon read_bytes MB | daemon VmHWM MiB |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if lat else "") + "---:|---:|")

        def ratio(v, t):
            return f"{v / t:.2f}" if v is not None and t else "-"

        for r in rows:
            L.append(f"| {r['round']}{' ⚠' if r['foreign_drops'] else ''} | {r['side']} | {r['order']} | {r['seconds']:.3f} | {r['gbps']:.2f} | {r['slowest_file_s']:.3f} | "
                     f"{r['files']} | {fmt_mb(r['proc_read'])} | {ratio(r['proc_read'], r['tensor_bytes'])} | "
                     f"{fmt_mb(r['disk_bytes'])} | {ratio(r['disk_bytes'], r['tensor_bytes'])} |"
                     + (f" {r['lat_reqs']} | {fmt_mb(r['lat_bytes'])} |" if lat else "")
                     + f" {fmt_mb(r['daemon_read']) if r['side'] == 'mount' else '-'} | "
                     f"{r['daemon_hwm_kib'] // 1024 if r['daemon_hwm_kib'] else '-'} |")
        if self.notes:
            L.append("")
            L.extend(f"- {n}" for n in self.notes)
        text = "\n".join(L) + "\n"
        path = os.path.join(self.results, f"cold-{self.stamp}.md")
        with open(path, "w") as f:
            f.write(text)
        sys.stdout.write(text)
        log(f"report: {path}; logs: {self.logs}")
        return 0


def fmt_mb(v):
    return "-" if v is None else f"{v / 1e6:.1f}"


def same_file_content(a, b):
    sa, sb = os.stat(a), os.stat(b)
    if sa.st_size != sb.st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("_load", "_check"):
        sys.exit(loader_main(sys.argv[1:]))
    argv = sys.argv[1:]
    args = parse_args(argv)
    bench = Bench(args)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell starts background jobs with it ignored
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    rc = 1
    try:
        rc = bench.run(argv)
    except BenchError as e:
        log(f"cold_bench: FAILED: {e}")
    except KeyboardInterrupt:
        log("cold_bench: interrupted")
        rc = 130
    finally:
        # a second signal must not cut the unmounts short
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        bench.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()
