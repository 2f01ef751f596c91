#!/usr/bin/env python3
"""Stress test of `shardfs mount`: N reader processes read random ranges of
every rank file of a mount over a sparse Llama-3 checkpoint and check every
byte against tests/stress/rankcheck.py (computed from the plan and the
sparse checkpoint's fill pattern, not by the engine).

    # the recorded run (issue 7): Llama-3-70B, TP=32 PP=8, 16 readers, 5 min
    python tests/stress/stress.py run --model 70b --seconds 300 --readers 16

    # CI / dev: 30 s (makes bench-out/sparse-llama-3-70b first when missing)
    python tests/stress/stress.py run --model 70b --seconds 30

    # check the checker against `shardfs convert` output first (two files of
    # the same layout on the 8B checkpoint, bf16 and float32), and show that it
    # catches one wrong byte
    python tests/stress/stress.py selftest --model 8b

While reading, the daemon's VmRSS / VmHWM / threads / open fds are sampled
every second; a watchdog fails the run when no read completes for
--stall-seconds (default 30) and dumps every daemon thread's wchan and
kernel stack, and each reader's. The mount is unmounted on every path.
Exit status 0 only when there was no error, no stall, the daemon is alive
and serving at the end and `shardfs unmount` worked. A JSON report goes to
--report (default bench-out/stress-report.json).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import rankcheck  # noqa: E402

LAYOUT_70B = ["--tp-size", "32", "--pp-size", "8", "--kv-size-multiplier", "4", "--qkv-linear", "--fuse-qkv"]
MAX_READ = 4 << 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shardfs_bin(args) -> str:
    b = args.shardfs or os.environ.get("SHARDFS_BIN") or str(REPO / ".build/release/shardfs")
    if not os.access(b, os.X_OK):
        sys.exit(f"no shardfs binary at {b} (swift build -c release, or --shardfs / SHARDFS_BIN)")
    return b


def ensure_checkpoint(args) -> Path:
    src = Path(args.src) if args.src else REPO / "bench-out" / f"sparse-llama-3-{args.model}"
    if not (src / "model.safetensors.index.json").exists():
        log(f"making the sparse checkpoint {src}")
        subprocess.run([sys.executable, str(REPO / "bench/make_sparse_checkpoint.py"), "--model", args.model,
                        "--out", str(src)], check=True)
    return src


def get_plan(exe: str, src: Path, layout: list) -> dict:
    r = subprocess.run([exe, "plan", str(src), *layout, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"shardfs plan failed ({r.returncode}):\n{r.stderr}")
    return json.loads(r.stdout)


# ---------------------------------------------------------------------------
# selftest: the checker against `shardfs convert`


def selftest(args) -> int:
    exe = shardfs_bin(args)
    src = ensure_checkpoint(args)
    layout = args.layout.split() if args.layout else LAYOUT_70B
    source = rankcheck.SparseSource(src)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="shardfs-selftest-", dir=args.tmp) as tmp:
        for dtype, part in (("bfloat16", "0/128"), ("float32", "77/128")):
            out = Path(tmp) / dtype
            extra = ["--dtype", dtype] if dtype != "bfloat16" else []
            r = subprocess.run([exe, "convert", str(src), str(out), *layout, *extra, "--part", part],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"shardfs convert failed:\n{r.stderr}")
            plan = get_plan(exe, src, layout + extra)
            files = rankcheck.out_tensors(plan, source)
            for p in sorted((out / "model").glob("*.pt")):
                rel = f"model/{p.name}"
                size, tensors = files[rel]
                data = bytearray(p.read_bytes())
                if len(data) != size:
                    log(f"FAIL {rel}: converted size {len(data)}, plan {size}")
                    failures += 1
                    continue
                rankcheck.zero_crc_fields(data, rankcheck.parse_zip(lambda o, n: bytes(data[o:o + n]), size))
                rf = rankcheck.load_rank_file(rel, size, tensors, lambda o, n: bytes(data[o:o + n]))
                # every byte, in 8 MiB pieces
                bad = None
                for off in range(0, size, 8 << 20):
                    want = rf.expected(off, 8 << 20)
                    if want != data[off: off + len(want)]:
                        i = next(k for k in range(len(want)) if want[k] != data[off + k])
                        bad = off + i
                        break
                # the cached metadata must not be what makes it pass: the
                # tensor data alone must hold pattern bytes the checker computed
                spans_nonzero = sum(1 for s, e, t in rf.spans if any(t.expected(0, min(64, e - s))))
                if bad is not None:
                    log(f"FAIL {dtype} {rel}: checker and convert differ at byte {bad}")
                    failures += 1
                    continue
                # a deliberately wrong byte inside a tensor's pattern bytes
                s, e, t = rf.spans[len(rf.spans) // 2]
                mutated = bytearray(data[s: s + 64])
                mutated[5] ^= 0x01
                caught = rf.expected(s, 64) != bytes(mutated)
                log(f"ok {dtype} {rel}: {size} bytes equal convert's (CRC fields zeroed); "
                    f"{len(rf.spans)} tensors, {spans_nonzero} start with pattern bytes; "
                    f"a flipped bit at {s + 5} is {'caught' if caught else 'NOT caught'}")
                if not caught or spans_nonzero == 0:
                    failures += 1
    log("selftest " + ("passed" if not failures else f"FAILED ({failures})"))
    return 1 if failures else 0


# ---------------------------------------------------------------------------
# the run


def daemon_pid(mnt: Path) -> int:
    r = subprocess.run(["pgrep", "-f", re.escape(str(mnt))], capture_output=True, text=True)
    for tok in r.stdout.split():
        pid = int(tok)
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mount" in argv and str(mnt).encode() in argv:
            return pid
    return 0


def is_mounted(mnt: Path) -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(mnt) for line in f if len(line.split()) > 2)


def proc_status(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def dump_threads(pid: int, what: str) -> str:
    lines = [f"--- {what} {pid} ---"]
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int) if os.path.isdir(f"/proc/{pid}/task") else []:
        t = f"/proc/{pid}/task/{tid}"
        try:
            comm = Path(f"{t}/comm").read_text().strip()
            wchan = Path(f"{t}/wchan").read_text().strip()
            stat = Path(f"{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        lines.append(f"task {tid} ({comm}) state {stat} wchan {wchan}")
        try:
            lines += ["    " + s for s in Path(f"{t}/stack").read_text().splitlines()]
        except OSError:
            pass
    return "\n".join(lines)


# set in the parent before fork, read by the readers
FILES: list = []


def reader(i: int, seed: int, mnt: str, stop, reads, nbytes, errs, errq) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(seed * 1000 + i)
    fds: dict = {}
    try:
        while not stop.is_set():
            rf = FILES[rng.randrange(len(FILES))]
            # a third of the reads start near a record boundary (header,
            # data start / end, descriptor, central directory, EOF)
            if rng.random() < 0.35:
                off = rng.choice(rf.boundaries) + rng.randint(-70000, 70000)
            else:
                off = rng.randrange(rf.size)
            off = min(max(off, 0), rf.size)
            n = min(MAX_READ, int(math.exp(rng.uniform(0, math.log(MAX_READ)))))
            path = f"{mnt}/{rf.path}"
            fresh = rng.random() < 0.03
            try:
                if fresh:
                    fd = os.open(path, os.O_RDONLY)
                else:
                    fd = fds.get(rf.path)
                    if fd is None:
                        fd = fds[rf.path] = os.open(path, os.O_RDONLY)
                try:
                    got = os.pread(fd, n, off)
                finally:
                    if fresh:
                        os.close(fd)
            except OSError as e:
                errs[i] += 1
                errq.put(f"reader {i}: {rf.path} pread({n}, {off}): {errno.errorcode.get(e.errno, e.errno)} {e}")
                time.sleep(0.1)
                continue
            want = rf.expected(off, n)
            if got != want:
                errs[i] += 1
                if len(got) != len(want):
                    msg = f"{len(got)} bytes, expected {len(want)}"
                else:
                    k = next(k for k in range(len(want)) if got[k] != want[k])
                    msg = f"first difference at file offset {off + k}: got {got[k:k + 16].hex()} want {want[k:k + 16].hex()}"
                errq.put(f"reader {i}: {rf.path} pread({n}, {off}): {msg}")
            reads[i] += 1
            nbytes[i] += len(got)
    finally:
        for fd in fds.values():
            os.close(fd)


def unmount(exe: str, mnt: Path) -> str:
    """`shardfs unmount`, then lazy fusermount3 and SIGKILL as last resorts;
    returns what had to be done."""
    pid = daemon_pid(mnt)
    r = subprocess.run([exe, "unmount", str(mnt)], capture_output=True, text=True, timeout=120)
    how = f"shardfs unmount: exit {r.returncode}" + (f" ({r.stderr.strip()[:300]})" if r.returncode else "")
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
        how += "; fusermount3 -u -z needed"
    if pid:
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}") or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            how += f"; daemon {pid} outlived its mount, killed"
    return how


def run(args) -> int:
    exe = shardfs_bin(args)
    src = ensure_checkpoint(args)
    layout = args.layout.split() if args.layout else list(LAYOUT_70B)
    if args.dtype:
        layout += ["--dtype", args.dtype]
    t0 = time.time()
    plan = get_plan(exe, src, layout)
    source = rankcheck.SparseSource(src)
    files = rankcheck.out_tensors(plan, source)
    log(f"plan: {len(files)} files, {plan['totalSize'] / 1e9:.1f} GB ({time.time() - t0:.1f} s)")

    mnt = Path(tempfile.mkdtemp(prefix="shardfs-stress-", dir=args.tmp))
    daemon_log = Path(args.report).with_suffix(".daemon.log")
    daemon_log.parent.mkdir(parents=True, exist_ok=True)
    daemon_log.unlink(missing_ok=True)
    cmd = [exe, "mount", str(src), str(mnt), *layout, *args.mount_opts.split(), "--log-file", str(daemon_log)]
    report = {"command": " ".join(sys.argv), "mount": " ".join(cmd), "files": len(files),
              "readers": args.readers, "seconds": args.seconds, "seed": args.seed}
    problems: list[str] = []
    procs: list = []
    stop = None
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not is_mounted(mnt):
            problems.append(f"mount failed ({r.returncode}): {r.stderr.strip()}")
            return finish(report, problems, args)
        pid = daemon_pid(mnt)
        log(f"mounted {mnt} (daemon {pid}): {' '.join(cmd)}")
        t0 = time.time()
        global FILES
        FILES = []
        for path, (size, tensors) in sorted(files.items()):
            fd = os.open(mnt / path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size != size:
                    problems.append(f"{path}: st_size {os.fstat(fd).st_size}, plan size {size}")
                FILES.append(rankcheck.load_rank_file(path, size, tensors, rankcheck.pread_full(fd)))
            finally:
                os.close(fd)
        log(f"parsed and validated the zip structure and data.pkl of {len(FILES)} files ({time.time() - t0:.1f} s)")
        if problems:
            return finish(report, problems, args)

        ctx = mp.get_context("fork")
        stop = ctx.Event()
        reads = ctx.Array("q", args.readers, lock=False)
        nbytes = ctx.Array("q", args.readers, lock=False)
        errs = ctx.Array("q", args.readers, lock=False)
        errq = ctx.Queue()
        procs = [ctx.Process(target=reader, args=(i, args.seed, str(mnt), stop, reads, nbytes, errs, errq), daemon=True)
                 for i in range(args.readers)]
        for p in procs:
            p.start()
        # (t, VmRSS kB, VmHWM kB, threads, fds, reads, bytes, RssAnon kB, RssFile kB);
        # RssFile is mostly the sources' mapped pages that gathers touched
        samples = []
        start = time.monotonic()
        last_reads, last_progress = 0, start
        errors: list[str] = []
        while True:
            time.sleep(1)
            now = time.monotonic()
            st = proc_status(pid)
            total_reads, total_bytes = sum(reads), sum(nbytes)
            while not errq.empty() and len(errors) < 50:
                errors.append(errq.get())
            if not st:
                problems.append(f"the daemon {pid} died after {now - start:.0f} s\n{daemon_log.read_text(errors='replace')[-3000:]}")
                break
            samples.append((round(now - start, 1), st.get("VmRSS"), st.get("VmHWM"), st.get("Threads"), st.get("fds"),
                            total_reads, total_bytes, st.get("RssAnon"), st.get("RssFile")))
            if total_reads != last_reads:
                last_reads, last_progress = total_reads, now
            elif now - last_progress > args.stall_seconds:
                dumps = [dump_threads(pid, "daemon")] + [dump_threads(p.pid, f"reader {k}") for k, p in enumerate(procs)]
                problems.append(f"no read completed for {now - last_progress:.0f} s (deadlock?)\n" + "\n".join(dumps))
                break
            if int(now - start) % 10 == 0:
                log(f"{now - start:5.0f} s: {total_reads} reads, {total_bytes / 2**30:.2f} GiB checked, "
                    f"{sum(errs)} errors; daemon VmRSS {st.get('VmRSS', 0) / 1024:.1f} MiB, "
                    f"VmHWM {st.get('VmHWM', 0) / 1024:.1f} MiB, {st.get('Threads')} threads, {st.get('fds')} fds")
            if now - start >= args.seconds:
                break
        stop.set()
        for p in procs:
            p.join(timeout=60)
        hung = [k for k, p in enumerate(procs) if p.is_alive()]
        if hung:
            problems.append(f"readers {hung} did not finish within 60 s of the stop\n"
                            + "\n".join(dump_threads(procs[k].pid, f"reader {k}") for k in hung))
        while not errq.empty() and len(errors) < 50:
            errors.append(errq.get())
        elapsed = time.monotonic() - start
        total_reads, total_bytes, total_errs = sum(reads), sum(nbytes), sum(errs)
        if total_errs:
            problems.append(f"{total_errs} read errors / wrong bytes; the first:\n" + "\n".join(errors[:20]))
        # the daemon must still be alive and serving after the run
        if daemon_pid(mnt) != pid or not is_mounted(mnt):
            problems.append("after the run the daemon is gone or the mount vanished")
        else:
            fd = os.open(mnt / FILES[0].path, os.O_RDONLY)
            try:
                if os.pread(fd, 4096, 0) != FILES[0].expected(0, 4096):
                    problems.append("after the run the first 4 KiB of the first file read wrong")
            finally:
                os.close(fd)
        rss = [s[1] for s in samples if s[1]]
        hwm = max((s[2] for s in samples if s[2]), default=0)
        tenth = max(1, len(rss) // 10)
        report.update({
            "duration_s": round(elapsed, 1), "reads": total_reads, "bytes_checked": total_bytes,
            "errors": total_errs, "first_errors": errors[:20],
            "rss_max_kib": max(rss, default=0), "hwm_max_kib": hwm,
            "rss_first_tenth_max_kib": max(rss[:tenth], default=0), "rss_last_tenth_max_kib": max(rss[-tenth:], default=0),
            "rss_anon_max_kib": max((s[7] or 0 for s in samples), default=0),
            "rss_file_max_kib": max((s[8] or 0 for s in samples), default=0),
            "threads_max": max((s[3] or 0 for s in samples), default=0),
            "fds_first": samples[0][4] if samples else None, "fds_last": samples[-1][4] if samples else None,
            "samples": samples,
        })
        log(f"done: {elapsed:.0f} s, {total_reads} reads, {total_bytes / 2**30:.2f} GiB "
            f"({total_bytes} bytes) checked, {total_errs} errors; daemon VmRSS max {max(rss, default=0) / 1024:.1f} MiB "
            f"(first tenth max {report['rss_first_tenth_max_kib'] / 1024:.1f}, last tenth max "
            f"{report['rss_last_tenth_max_kib'] / 1024:.1f}; RssAnon max {report['rss_anon_max_kib'] / 1024:.1f}, "
            f"RssFile max {report['rss_file_max_kib'] / 1024:.1f}), VmHWM {hwm / 1024:.1f} MiB, "
            f"threads max {report['threads_max']}, fds {report['fds_first']} -> {report['fds_last']}")
    finally:
        if stop is not None:
            stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
        if is_mounted(mnt) or daemon_pid(mnt):
            how = unmount(exe, mnt)
            report["unmount"] = how
            if "needed" in how or "killed" in how or "exit 0" not in how:
                problems.append(f"unmount: {how}")
        if is_mounted(mnt):
            problems.append(f"{mnt} is still mounted")
        else:
            try:
                mnt.rmdir()
            except OSError:
                pass
    return finish(report, problems, args)


def finish(report: dict, problems: list, args) -> int:
    report["problems"] = problems
    report["result"] = "FAIL" if problems else "PASS"
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    for p in problems:
        log("FAIL: " + p)
    log(f"stress {report['result']} (report: {args.report})")
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "selftest"):
        p = sub.add_parser(name)
        p.add_argument("--model", choices=["8b", "70b"], default="70b" if name == "run" else "8b",
                       help="which sparse Llama-3 checkpoint (made under bench-out/ when missing)")
        p.add_argument("--src", help="an existing sparse checkpoint directory instead")
        p.add_argument("--layout", help=f"layout flags (default: {' '.join(LAYOUT_70B)})")
        p.add_argument("--shardfs", help="the binary (default: $SHARDFS_BIN or .build/release/shardfs)")
        p.add_argument("--tmp", default=None, help="where to make the mount point / scratch")
    r = sub.choices["run"]
    r.add_argument("--seconds", type=float, default=30)
    r.add_argument("--readers", type=int, default=16)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--dtype", choices=["bfloat16", "float32"], help="output dtype (default: the checkpoint's)")
    r.add_argument("--mount-opts", default="", help="extra mount flags, e.g. '--page-cache' or '--no-splice'")
    r.add_argument("--stall-seconds", type=float, default=30)
    r.add_argument("--report", default=str(REPO / "bench-out/stress-report.json"))
    args = ap.parse_args()
    return selftest(args) if args.cmd == "selftest" else run(args)


if __name__ == "__main__":
    sys.exit(main())
