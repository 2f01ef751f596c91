#!/usr/bin/env python3
"""Writes dist/shardfs-VERSION-py3-none-manylinux_2_34_x86_64.whl by the wheel
spec (PEP 427, the binary distribution format; metadata 2.4, PEP 639
licenses) from the cluster package's stage (scripts/package.sh) and this
folder's Python package: no build backend, no network.

    python3 packaging/python/build_wheel.py --stage .build-dist/package/stage/shardfs-0.1.0-linux-x86_64 \
        --glibc 2.34 --out dist

What goes where, as pip installs it:
- `shardfs/` (this folder's package) into site-packages;
- the binary as `shardfs-V.data/scripts/shardfs`: the environment's
  `bin/shardfs`, on PATH when the venv is active;
- completions and man pages as `shardfs-V.data/data/share/...`: under the
  environment's `share/` (`share/man/man1/shardfs.mount.1`, ...);
- the licenses (the project's, the third-party notices and theirs) in
  `shardfs-V.dist-info/licenses/`.
"""
import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def metadata(project: dict, version: str, license_files: list, description: str) -> str:
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project['description']}",
        f"License-Expression: {project['license']}",
    ]
    lines += [f"License-File: {name}" for name in license_files]
    lines.append(f"Requires-Python: {project['requires-python']}")
    if project.get("keywords"):
        lines.append("Keywords: " + ",".join(project["keywords"]))
    lines += [f"Classifier: {c}" for c in project.get("classifiers", [])]
    lines += [f"Project-URL: {label}, {url}" for label, url in project.get("urls", {}).items()]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + description


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, type=Path, help="the package's stage folder (bin/, share/, licenses/, LICENSE)")
    ap.add_argument("--glibc", required=True, help="the glibc floor the binary was checked against (package.sh), e.g. 2.34")
    ap.add_argument("--out", default=REPO / "dist", type=Path)
    a = ap.parse_args()

    pyproject = tomllib.loads((HERE / "pyproject.toml").read_text())
    project = pyproject["project"]
    version = (REPO / "VERSION").read_text().strip()
    name = project["name"]
    machine = os.uname().machine
    major, minor = a.glibc.split(".")
    tag = f"py3-none-manylinux_{major}_{minor}_{machine}"
    data, distinfo = f"{name}-{version}.data", f"{name}-{version}.dist-info"

    # (path in the wheel, bytes, mode)
    entries = []
    init = (HERE / "shardfs" / "__init__.py").read_text()
    init, n = re.subn(r'^__version__ = ".*"', f'__version__ = "{version}"', init, flags=re.M)
    assert n == 1, "shardfs/__init__.py has no __version__ line"
    entries.append(("shardfs/__init__.py", init.encode(), 0o644))
    entries.append(("shardfs/py.typed", b"", 0o644))
    binary = a.stage / "bin" / "shardfs"
    entries.append((f"{data}/scripts/shardfs", binary.read_bytes(), 0o755))
    for path in sorted((a.stage / "share").rglob("*")):
        if path.is_file():
            entries.append((f"{data}/data/share/{path.relative_to(a.stage / 'share')}", path.read_bytes(), 0o644))
    license_files = ["LICENSE"] + sorted(p.name for p in (a.stage / "licenses").iterdir() if p.is_file())
    for license_name in license_files:
        source = a.stage / license_name if license_name == "LICENSE" else a.stage / "licenses" / license_name
        entries.append((f"{distinfo}/licenses/{license_name}", source.read_bytes(), 0o644))
    description = (HERE / project["readme"]).read_text()
    entries.append((f"{distinfo}/METADATA", metadata(project, version, license_files, description).encode(), 0o644))
    wheel = f"Wheel-Version: 1.0\nGenerator: shardfs packaging/python/build_wheel.py\nRoot-Is-Purelib: false\nTag: {tag}\n"
    entries.append((f"{distinfo}/WHEEL", wheel.encode(), 0o644))
    record = "".join(f"{path},{record_hash(content)},{len(content)}\n" for path, content, _ in entries)
    record += f"{distinfo}/RECORD,,\n"
    entries.append((f"{distinfo}/RECORD", record.encode(), 0o644))

    # Every file dated the commit's time: two builds of one commit differ only where the binary does.
    stamp = int(subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True).stdout.strip()
                or 315532800)
    date_time = time.gmtime(max(stamp, 315532800))[:6]
    a.out.mkdir(parents=True, exist_ok=True)
    target = a.out / f"{name}-{version}-{tag}.whl"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for path, content, mode in entries:
            info = zipfile.ZipInfo(path, date_time=date_time)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
    partial.replace(target)
    print(f"wheel: {target} ({target.stat().st_size} bytes, {len(entries)} files)")


if __name__ == "__main__":
    sys.exit(main())
