"""`shardfs mount --persist-to DIR`: the background materialiser (issue 5).

Every file it leaves under a final name is convert's, byte for byte (real
CRC-32s); a daemon killed at any moment leaves no partial file under a final
name and resumes; a full target stops it cleanly while the mount keeps
serving; DIR holding another layout is refused unless --force; --part splits
the work; `shardfs status` reports it all. The mount's own bytes never change
when a file switches to being served from its persisted copy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from checks import files_under
from mounting import (  # noqa: F401
    BIG, GQA_TP2_PP2, MANY, Expected, _alive, assert_file_equals, expected_for, is_mounted, log_tail,
    new_mnt, wait_for,
)

pytestmark = pytest.mark.mount


def status(shardfs, mnt: Path) -> dict:
    r = shardfs.run("status", mnt, "--json", timeout=30)
    assert r.returncode == 0, f"status failed:\n{r.describe()}"
    return json.loads(r.stdout)


def wait_persist(shardfs, m, states=("done",), timeout: float = 120) -> dict:
    seen = {}

    def check():
        seen.update(status(shardfs, m.mnt))
        return (seen.get("persist") or {}).get("state") in states

    assert wait_for(check, timeout, step=0.2), f"materialiser not {states} after {timeout}s: {seen}\n{log_tail(m.log)}"
    return seen["persist"]


def final_files(d: Path) -> list[str]:
    """Relative paths of the files under d/model, temporaries included."""
    model = d / "model"
    return sorted(str(p.relative_to(d)) for p in model.rglob("*") if p.is_file()) if model.exists() else []


def temporaries(d: Path) -> list[str]:
    return [f for f in final_files(d) if ".shardfs-tmp-" in f]


def assert_final_files_are_converts(d: Path, exp: Expected, what: str) -> list[str]:
    """Every file under a final name in d/model equals convert's; returns them."""
    done = [f for f in final_files(d) if ".shardfs-tmp-" not in f]
    for f in done:
        name = f.removeprefix("model/")
        assert name in exp.names, f"{what}: unexpected file {f} in {d}"
        got = (d / f).read_bytes()
        want = exp.path(name).read_bytes()
        assert got == want, f"{what}: {f} ({len(got)} bytes) differs from convert's ({len(want)} bytes)"
    return done


def assert_complete(d: Path, exp: Expected, what: str) -> None:
    assert temporaries(d) == [], f"{what}: temporaries left: {temporaries(d)}"
    done = assert_final_files_are_converts(d, exp, what)
    assert sorted(done) == sorted("model/" + n for n in exp.names), f"{what}: {d} holds {done}"
    # No `done`/`checkpoint` marker in the tag: only model/ and the manifest.
    assert sorted(os.listdir(d)) == [".shardfs", "model"], f"{what}: {d} holds {sorted(os.listdir(d))}"
    for f in done:
        with zipfile.ZipFile(d / f) as z:
            assert z.testzip() is None, f"{what}: zipfile.testzip() rejects {f}"
        r = subprocess.run(["unzip", "-tq", str(d / f)], capture_output=True, text=True)
        assert r.returncode == 0, f"{what}: unzip -t rejects {f}: {r.stdout}{r.stderr}"


@pytest.fixture(scope="session", autouse=True)
def unzip_available():
    if subprocess.run(["which", "unzip"], capture_output=True).returncode != 0:
        pytest.fail("unzip is not installed (scripts/setup.sh installs it)", pytrace=False)


@pytest.mark.parametrize("case,extra", [(BIG, []), (MANY, ["--persist-jobs", "2"])], ids=["big", "many-jobs2"])
def test_persist_writes_converts_tree(shardfs, conversions, ckpts, mounts, tmp_path, case, extra):
    exp = expected_for(conversions, case)
    d = tmp_path / "persisted"
    m = mounts.mount(ckpts.get(case.ckpt).path, new_mnt(tmp_path), *case.args, "--persist-to", d, *extra)
    p = wait_persist(shardfs, m)
    assert p["filesDone"] == p["filesTotal"] == len(exp.names), p
    assert p["bytesDone"] == p["bytesTotal"] == sum(exp.path(n).stat().st_size for n in exp.names), p
    assert p["lastError"] is None if "lastError" in p else True
    assert_complete(d, exp, f"{case.id} persisted")
    # every file is now served from its copy, still with zero CRC fields
    assert p["filesServedFromDirectory"] == len(exp.names), p
    for n in exp.names:
        assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    assert "persisted every file" in m.log_text(), log_tail(m.log)
    # the human form names the numbers too
    r = shardfs.run("status", m.mnt)
    assert r.returncode == 0 and f"{len(exp.names)}/{len(exp.names)} files" in r.stdout, r.describe()


def test_persist_survives_sigkill_and_resumes(shardfs, conversions, ckpts, mounts, tmp_path):
    """SIGKILL at several points while persisting (held to 1 MiB/s so the
    kills land mid-way, often with a temporary open): after each, every file under a final name is
    convert's; `shardfs unmount` recovers; a new daemon on the same DIR keeps
    the finished files (not rewritten) and completes the tree."""
    case = MANY
    exp = expected_for(conversions, case)
    total = sum(exp.path(n).stat().st_size for n in exp.names)
    assert total > 4 << 20, f"case too small to kill mid-way: {total} bytes"
    src = ckpts.get(case.ckpt).path
    d = tmp_path / "persisted"
    mnt = new_mnt(tmp_path)
    kept: dict = {}
    kills = 0
    saw_temporary = False
    for delay in (0.3, 0.7, 1.1, 1.6):
        m = mounts.mount(src, mnt, *case.args, "--persist-to", d, "--persist-bandwidth-mib", "1")
        time.sleep(delay)
        pids = m.pids()
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        assert wait_for(lambda: not _alive(pids[0]), 10)
        kills += 1
        saw_temporary = saw_temporary or bool(temporaries(d))
        r = mounts.unmount(mnt)
        assert r.returncode == 0 and not is_mounted(mnt), r.describe()
        done = assert_final_files_are_converts(d, exp, f"after kill {kills} ({delay}s)")
        # files finished before must not have been rewritten since
        for f, ident in kept.items():
            st = (d / f).stat()
            assert (st.st_ino, st.st_mtime_ns) == ident, f"{f} was rewritten after kill {kills}"
        for f in done:
            st = (d / f).stat()
            kept.setdefault(f, (st.st_ino, st.st_mtime_ns))
    assert 0 < len(kept) < len(exp.names), f"the kills did not land mid-way ({len(kept)} of {len(exp.names)} files done)"
    assert saw_temporary, "no kill left a temporary behind: the resume's cleanup was not exercised"
    m = mounts.mount(src, mnt, *case.args, "--persist-to", d)
    p = wait_persist(shardfs, m)
    assert p["filesResumed"] >= len(kept), p
    assert_complete(d, exp, "after resuming")
    for f, ident in kept.items():
        st = (d / f).stat()
        assert (st.st_ino, st.st_mtime_ns) == ident, f"{f} was rewritten on resume"


def test_persist_target_full(shardfs, conversions, ckpts, mounts, tmp_path):
    """A target that fills up (a 1 MiB tmpfs) stops the materialiser with the
    file named; the mount keeps serving; nothing partial under a final name."""
    case = BIG
    exp = expected_for(conversions, case)
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a small tmpfs: {r.stderr}"
    try:
        m = mounts.mount(ckpts.get(case.ckpt).path, new_mnt(tmp_path), *case.args, "--persist-to", d)
        p = wait_persist(shardfs, m, states=("failed",), timeout=60)
        err = p.get("lastError") or ""
        assert "No space left on device" in err and str(d / "model") in err and ".pt" in err, p
        assert "materialiser stopped" in m.log_text() and "No space left" in m.log_text(), log_tail(m.log)
        assert temporaries(d) == [], f"temporaries left: {temporaries(d)}"
        assert_final_files_are_converts(d, exp, "on a full target")
        for n in exp.names:
            assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    finally:
        for mnt in mounts.points:
            if is_mounted(mnt):
                mounts.unmount(mnt)
        # The daemon may still be exiting and hold the tmpfs busy: retry, then
        # detach it lazily, so no mount outlives the test.
        for _ in range(50):
            if subprocess.run(["umount", str(d)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_persist_refuses_another_layout(shardfs, conversions, ckpts, mounts, tmp_path):
    a, b = BIG, GQA_TP2_PP2
    exp_b = expected_for(conversions, b)
    d = tmp_path / "persisted"
    mnt = new_mnt(tmp_path)
    m = mounts.mount(ckpts.get(a.ckpt).path, mnt, *a.args, "--persist-to", d)
    wait_persist(shardfs, m)
    before = {f: (d / f).read_bytes() for f in final_files(d)}
    assert mounts.unmount(mnt).returncode == 0

    m2 = mounts.try_mount(ckpts.get(b.ckpt).path, mnt, *b.args, "--persist-to", d)
    assert m2.run.returncode != 0, f"another layout was accepted:\n{m2.run.describe()}"
    assert "--persist-to" in m2.run.stderr and "another" in m2.run.stderr and "--force" in m2.run.stderr, m2.run.describe()
    assert not is_mounted(mnt)
    assert {f: (d / f).read_bytes() for f in final_files(d)} == before, "a refused mount changed DIR"

    m3 = mounts.mount(ckpts.get(b.ckpt).path, mnt, *b.args, "--persist-to", d, "--force")
    wait_persist(shardfs, m3)
    assert_complete(d, exp_b, "after --force")


def test_persist_parts_union(shardfs, conversions, ckpts, mounts, tmp_path):
    """Two daemons with --part 0/2 and 1/2 on one DIR: together, convert's tree."""
    case = MANY
    exp = expected_for(conversions, case)
    d = tmp_path / "persisted"
    src = ckpts.get(case.ckpt).path
    ms = [mounts.mount(src, new_mnt(tmp_path, f"mnt{i}"), *case.args, "--persist-to", d, "--part", f"{i}/2") for i in range(2)]
    totals = [wait_persist(shardfs, m)["filesTotal"] for m in ms]
    assert sum(totals) == len(exp.names) and min(totals) > 0, totals
    assert_complete(d, exp, "union of --part 0/2 and 1/2")


def test_persist_flag_errors(shardfs, ckpts, mounts, tmp_path):
    src = ckpts.get(GQA_TP2_PP2.ckpt).path
    for args, flag in ((["--part", "0/2"], "--part"), (["--force"], "--force"),
                       (["--persist-to", tmp_path / "d", "--part", "2/2"], "--part"),
                       (["--persist-to", tmp_path / "m9" / "x"], "--persist-to")):
        mnt = new_mnt(tmp_path, "m9" if flag == "--persist-to" else f"m{len(mounts.points)}")
        m = mounts.try_mount(src, mnt, *GQA_TP2_PP2.args, *args)
        assert m.run.returncode != 0 and flag in m.run.stderr, m.run.describe()
        assert not is_mounted(mnt)
    r = shardfs.run("status", tmp_path)
    assert r.returncode != 0 and "not a ShardFS mount" in r.stderr, r.describe()


def test_status_without_persist(shardfs, conversions, ckpts, mounts, tmp_path):
    case = GQA_TP2_PP2
    exp = expected_for(conversions, case)
    m = mounts.mount(ckpts.get(case.ckpt).path, new_mnt(tmp_path), *case.args)
    n = exp.names[0]
    assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    s = status(shardfs, m.mnt)
    assert s["persist"] is None if "persist" in s else True
    assert s["files"] == len(exp.names) and s["bytesServed"] >= len(exp.zeroed(n)), s
    assert sorted(os.listdir(m.mnt)) == ["model"], "the status file must not be listed"


def test_persist_xser(shardfs, conversions, ckpts, mounts, tmp_path):
    """--format xser: the persisted tree (reference files, .info.pt, one file
    per tensor) is convert's, byte for byte."""
    case = GQA_TP2_PP2
    args = [*case.args, "--format", "xser"]
    exp = Expected(conversions.converted_ok(case.ckpt, args).out)
    assert any(".tensors/tensor_" in n for n in exp.names), exp.names
    d = tmp_path / "persisted"
    m = mounts.mount(ckpts.get(case.ckpt).path, new_mnt(tmp_path), *args, "--persist-to", d)
    p = wait_persist(shardfs, m)
    assert p["filesDone"] == len(exp.names), p
    assert temporaries(d) == []
    done = assert_final_files_are_converts(d, exp, "xser persisted")
    assert sorted(done) == sorted("model/" + n for n in exp.names)
