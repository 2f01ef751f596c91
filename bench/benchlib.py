"""Shared by the Python benchmarks: the headline figures bench/report.sh collects."""
import os
import sys


def summary(area, figure, value, target="", status=""):
    """Appends one headline figure (to $BENCH_SUMMARY, when set), as bench/summary.sh does."""
    path = os.environ.get("BENCH_SUMMARY")
    if not path:
        return
    script = os.path.basename(sys.argv[0])
    with open(path, "a") as f:
        f.write("\t".join(str(x) for x in (area, figure, value, target, status, script)) + "\n")


def status(value, op, limit):
    """'met' or 'not met' for VALUE OP LIMIT (op '>=' or '<=')."""
    ok = value >= limit if op == ">=" else value <= limit
    return "met" if ok else "not met"
