"""Help, README and docs say what the code does.

- every flag a subcommand's `--help` lists is documented in
  docs/commands.md, and every flag the docs name exists (Slurm's and the
  bench scripts' aside, listed here by name);
- no help text or doc makes a claim the code no longer keeps (the stale
  ones are listed below, with what is true instead);
- nothing in the repository cites a path outside it, and every
  `docs/...md` path (and `docs/X.md: "Section"`) cited exists;
- the lists the docs keep are whole: every file of tests/compat in its
  README, every fuzz target in RELIABILITY.md's table (one table, no gap);
- the one-round benchmark table calls nothing "not met";
- the docs' commands run on the repository's example (examples/tiny-llama,
  as tests/compat/tiny_example.py uses it) where that is cheap, and do what
  the docs say: plan, convert (whole and in --part shares, resumed), verify,
  a converted tag back to Hugging Face and into another layout, xser and
  DCP output, and `plan` over a tag printing a 1-D norm's range as [c0:c1].
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from tiny_example import EXAMPLE

SUBCOMMANDS = ["convert", "plan", "mount", "unmount", "status", "verify"]

# A flag: `--name`, not part of a longer word or of a snake_case flag
# (NxD's converter's `--tp_size` is not ours).
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])")

# Flags the docs name that belong to other tools, each with where it is from.
OTHER_TOOLS_FLAGS = {
    "--array": "sbatch",
    "--exclusive": "sbatch",
    "--job-name": "sbatch",
    "--output": "sbatch",
    "--wrap": "sbatch",
    "--ntasks-per-node": "srun",
    "--overlap": "srun",
    "--training": "bench/scale_bench.py",
}

# The user-facing docs whose flags must exist.
USER_DOCS = ["README.md", "docs/commands.md", "docs/cluster.md", "docs/how-it-works.md"]

# Claims the code no longer keeps, and what it does instead. Matched with
# whitespace (and line breaks) normalised, case-insensitive.
STALE_CLAIMS = {
    r"never the optimizer state": "a training tag's optim/ is resharded (convert, mount, plan)",
    r"optimizer state \(TAG/optim/\) is not read": "optim/ is read unless --weights-only",
    r"other files \(optim/, README\) are never touched": "a training tag's layout writes optim/ and done",
    r"\(`?optim/`?, a README\) is never touched": "only files no manifest records are never touched",
    r"nothing but `model/` and `\.shardfs/` goes into DIR": "--persist-to writes optim/ and the carried files of a training tag",
    r"goes into DIR: no `done` marker": "a whole-layout persist of a training tag writes done, last",
    r"README: \\?\"Mounting in a Slurm job": "that section is in docs/cluster.md",
    r"\bissue \d+": "docs say what was measured, not which issue asked",
    r"another engineer": "docs say what was measured, not who",
    r"\bbranch `?(reliability|verify13|resume13)": "docs name commits, not branches",
}

DOCS = ["README.md", "BENCHMARKS.md", "RELIABILITY.md", "bench/README.md", "tests/compat/README.md",
        "tests/zero1/README.md", "tests/dcp/README.md"]


def docs_files() -> list[Path]:
    return [REPO / d for d in DOCS if (REPO / d).exists()] + sorted((REPO / "docs").rglob("*.md"))


def tracked_text_files() -> list[Path]:
    """The repository's files (as git tracks them, plus the untracked ones
    not ignored), text only."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    files = []
    for name in out:
        path = REPO / name
        if not name or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def help_text(shardfs, *command: str) -> str:
    run = shardfs.run(*command, "--help")
    assert run.returncode == 0, run.describe()
    return run.stdout


def listed_flags(help_output: str) -> set[str]:
    """The options a --help lists (its option lines, not its prose)."""
    flags = set()
    for line in help_output.splitlines():
        m = re.match(r"\s{2}(?:-\w, )?(--[a-z0-9-]+)", line)
        if m:
            flags.add(m.group(1))
    return flags


@pytest.fixture(scope="module")
def helps(shardfs) -> dict[str, str]:
    texts = {"": help_text(shardfs)}
    for command in SUBCOMMANDS:
        texts[command] = help_text(shardfs, command)
    return texts


# ---------------------------------------------------------------------------
# (a) flags: help <-> docs


def test_every_help_flag_is_documented(helps):
    documented = set(FLAG.findall((REPO / "docs/commands.md").read_text()))
    missing = {command: sorted(listed_flags(text) - documented - {"--help"})
               for command, text in helps.items() if command}
    missing = {c: f for c, f in missing.items() if f}
    assert not missing, f"flags --help lists but docs/commands.md does not mention: {missing}"
    assert "--version" in listed_flags(helps[""]) and "--version" in documented


def test_every_documented_flag_exists(helps):
    real = set().union(*(listed_flags(text) for text in helps.values()))
    wrong = {}
    for doc in USER_DOCS:
        unknown = sorted(set(FLAG.findall((REPO / doc).read_text())) - real - set(OTHER_TOOLS_FLAGS))
        if unknown:
            wrong[doc] = unknown
    assert not wrong, f"flags the docs name that no shardfs command has: {wrong}"


def test_other_tools_flags_are_still_used():
    """The exceptions above stay exceptions: each is still in the docs."""
    text = "".join((REPO / doc).read_text() for doc in USER_DOCS)
    unused = [flag for flag in OTHER_TOOLS_FLAGS if flag not in set(FLAG.findall(text))]
    assert not unused, f"OTHER_TOOLS_FLAGS lists flags no doc names any more: {unused}"


# ---------------------------------------------------------------------------
# (b) stale claims


def test_no_stale_claim_in_help(helps):
    found = []
    for command, text in helps.items():
        for pattern, truth in STALE_CLAIMS.items():
            if re.search(pattern, normalised(text), re.I):
                found.append(f"shardfs {command} --help: /{pattern}/ ({truth})")
    assert not found, "\n".join(found)


def test_no_stale_claim_in_docs_or_sources():
    found = []
    sources = sorted((REPO / "Sources").rglob("*.swift"))
    for path in docs_files() + sources:
        text = normalised(path.read_text())
        for pattern, truth in STALE_CLAIMS.items():
            if re.search(pattern, text, re.I):
                found.append(f"{path.relative_to(REPO)}: /{pattern}/ ({truth})")
    assert not found, "\n".join(found)


def test_help_says_what_happens_to_a_training_tag(helps):
    """The positive side of the stale claims: optim/ goes with a tag."""
    convert = normalised(helps["convert"])
    assert "ZeRO-1 optimizer state (TAG/optim/)" in convert and "--weights-only leaves them out" in convert
    mount = normalised(helps["mount"])
    assert "DIR/optim/" in mount and "done marker" in mount and "--part" in mount


def test_benchmark_table_judges_nothing_on_one_round():
    text = (REPO / "BENCHMARKS.md").read_text()
    table = re.search(r"<!-- report:begin \(bench/report\.sh( --quick)?\) -->(.*?)<!-- report:end -->", text, re.S)
    assert table, "BENCHMARKS.md has no report table"
    if table.group(1):
        assert "not met" not in table.group(2), "a one-round (--quick) table calls a figure not met"
        assert "one round" in table.group(2)


# ---------------------------------------------------------------------------
# (c) citations


# The last form, a workspace's absolute path to the notes, is spelt in two
# pieces so that this file does not itself name a machine's path.
OUTSIDE = re.compile(r"\.\./shared/|(?<![\w.-])shared/(?:spec|notes|fixtures)/|" + "/wo" + r"rk/shared")
# The spec notes' names, cited bare (they are docs/formats/*.md now).
BARE_SPEC = re.compile(r"(?<![\w/.-])(pt-format|nxd-layout|xser|zero1)\.md|\bpt-format\.md")
DOC_PATH = re.compile(r"(?<![\w./-])(docs/[\w./-]+\.md)(?:[,:]? \\?\"([^\"\\\n]+)\\?\")?")


def test_nothing_cites_a_path_outside_the_repository():
    found = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE.search(line) or (BARE_SPEC.search(line) and "docs/formats/" not in str(path)):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "citations outside the repository (cite docs/formats/ instead):\n" + "\n".join(found)


def test_cited_docs_and_sections_exist():
    """`docs/X.md` and `docs/X.md: "Section"` (as the daemon's notes cite
    them) name a file of the repository and a heading of it."""
    missing = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        for m in DOC_PATH.finditer(path.read_text()):
            target = REPO / m.group(1)
            if not target.is_file():
                missing.append(f"{path.relative_to(REPO)}: {m.group(1)} does not exist")
            elif m.group(2) and not re.search(rf"^#+ {re.escape(m.group(2))}", target.read_text(), re.M):
                missing.append(f"{path.relative_to(REPO)}: {m.group(1)} has no section \"{m.group(2)}\"")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------------------
# Lists the docs keep


def test_compat_readme_lists_every_file():
    readme = (REPO / "tests/compat/README.md").read_text()
    here = Path(__file__).resolve().parent
    names = sorted(p.name for p in here.iterdir()
                   if p.is_file() and p.name != "README.md" and not p.name.startswith("."))
    unlisted = [name for name in names if f"`{name}`" not in readme]
    assert not unlisted, f"tests/compat/README.md does not list: {unlisted}"


def test_reliability_lists_every_fuzz_target_in_one_table():
    targets = set(re.findall(r'^\s*"(\w+)": \w+Target\.run,', (REPO / "Sources/shardfs-fuzz/FuzzMain.swift").read_text(), re.M))
    assert len(targets) >= 9, targets
    lines = (REPO / "RELIABILITY.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| target | what it feeds |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    in_table = {m.group(1) for row in rows if (m := re.match(r"\| `(\w+)` \|", row))}
    after = "\n".join(lines[start + 2 + len(rows):start + 2 + len(rows) + 3])
    assert in_table == targets, (
        f"RELIABILITY.md's fuzz table (its rows up to the first non-table line) lists {sorted(in_table)}, "
        f"the targets are {sorted(targets)}; what follows the table: {after!r}")
    default = re.search(r"\|\| targets=\(([^)]*)\)", (REPO / "scripts/fuzz.sh").read_text()).group(1).split()
    assert set(default) == targets, f"scripts/fuzz.sh runs {default} by default"


# ---------------------------------------------------------------------------
# (d) the docs' commands on the example

LAYOUT = ["--tp-size", "2", "--pp-size", "2", "--kv-size-multiplier", "1", "--qkv-linear", "--fuse-qkv"]


def ok(run):
    assert run.returncode == 0, run.describe()
    return run


@pytest.fixture(scope="module")
def tag(shardfs, tmp_path_factory) -> Path:
    """README's "converted" command, the tutorial's flags on the example."""
    out = tmp_path_factory.mktemp("docs") / "pretrained_weight"
    ok(shardfs.run("convert", EXAMPLE, out, *LAYOUT, "--dtype", "float32"))
    return out


def test_plan_as_documented(shardfs):
    text = ok(shardfs.run("plan", EXAMPLE, *LAYOUT)).stdout
    assert "4 files" in text and "model/dp_rank_00_tp_rank_01_pp_rank_01.pt" in text
    plan = json.loads(ok(shardfs.run("plan", EXAMPLE, *LAYOUT, "--json")).stdout)
    assert [f["path"] for f in plan["files"]] == [
        f"model/dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt" for t in range(2) for p in range(2)]


def test_convert_writes_the_documented_files(tag):
    names = sorted(p.relative_to(tag).as_posix() for p in tag.rglob("*") if p.is_file() and ".shardfs" not in p.parts)
    assert names == [f"model/dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt" for t in range(2) for p in range(2)]
    # No `done` marker from a model (docs/formats/nxd-layout.md, "Files").
    assert not (tag / "done").exists() and not (tag / "checkpoint").exists()


def test_parts_and_a_run_again_as_documented(shardfs, tag, tmp_path):
    """Split over an array: the shares make the same files; a run again keeps them."""
    out = tmp_path / "split"
    for i in range(2):
        ok(shardfs.run("convert", EXAMPLE, out, *LAYOUT, "--dtype", "float32", "--part", f"{i}/2"))
    for name in (tag / "model").iterdir():
        assert (out / "model" / name.name).read_bytes() == name.read_bytes(), name.name
    again = ok(shardfs.run("convert", EXAMPLE, out, *LAYOUT, "--dtype", "float32"))
    said = again.stdout + again.stderr
    assert "kept 4 files" in said and "wrote 0 files" in said, again.describe()


def test_verify_as_documented(shardfs, tag):
    run = ok(shardfs.run("verify", EXAMPLE, tag, *LAYOUT, "--dtype", "float32"))
    assert "ok" in run.stdout


def test_tag_back_to_hugging_face_as_documented(shardfs, tag, tmp_path):
    """`convert TAG OUT --config MODEL --format hf`: the original tensors."""
    out = tmp_path / "hf"
    ok(shardfs.run("convert", tag, out, "--config", EXAMPLE, "--format", "hf"))
    got = load_file(out / "model.safetensors")
    want = {}
    for shard in sorted(EXAMPLE.glob("*.safetensors")):
        want.update(load_file(shard))
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        # The tag is float32 (--dtype float32): bf16 widened exactly.
        assert torch.equal(got[name], tensor.to(got[name].dtype)), name
    assert (out / "config.json").read_bytes() == (EXAMPLE / "config.json").read_bytes()


def test_tag_into_another_layout_as_documented(shardfs, tag, tmp_path):
    out = tmp_path / "tp1"
    ok(shardfs.run("convert", tag, out, "--config", EXAMPLE, "--tp-size", "1", "--pp-size", "2"))
    ok(shardfs.run("verify", EXAMPLE, out, "--tp-size", "1", "--pp-size", "2", "--dtype", "float32"))


def test_plan_over_a_tag_prints_a_norms_range_as_1d(shardfs, tag):
    """A 1-D norm's source range reads [0:64], not [0:1, 0:64]."""
    text = ok(shardfs.run("plan", tag, "--config", EXAMPLE, "--format", "hf")).stdout
    norm = [line for line in text.splitlines() if "<- model.norm.weight" in line]
    assert norm and all("model.norm.weight[0:64] (" in line for line in norm), "\n".join(norm) or text
    assert "[0:1, " not in text, text
    # A matrix keeps its two ranges.
    assert re.search(r"self_attn\.k_proj\.weight\[\d+:\d+, 0:64\]", text), text


def test_xser_files_as_documented(shardfs, tmp_path):
    out = tmp_path / "xser"
    ok(shardfs.run("convert", EXAMPLE, out, *LAYOUT, "--format", "xser"))
    p = out / "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    assert p.is_file() and (out / "model/dp_rank_00_tp_rank_00_pp_rank_00.pt.info.pt").is_file()
    assert (out / "model/dp_rank_00_tp_rank_00_pp_rank_00.pt.tensors/tensor_0.pt").is_file()


def test_dcp_from_a_model_as_documented(shardfs, tmp_path):
    """From a Hugging Face model, --format dcp writes the model alone."""
    out = tmp_path / "dcp"
    ok(shardfs.run("convert", EXAMPLE, out, "--format", "dcp", "--dcp-shards", "2"))
    names = sorted(p.name for p in out.iterdir() if p.name != ".shardfs")
    assert ".metadata" in names and any(n.endswith(".distcp") for n in names), names


def test_version_and_help_subcommand(shardfs):
    assert ok(shardfs.run("--version")).stdout.startswith("shardfs ")
    # docs/commands.md: `shardfs help mount` is the long help.
    assert "--persist-to" in ok(shardfs.run("help", "mount")).stdout
