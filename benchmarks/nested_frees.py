"""Frees nested under RCU/softirq: the issue-10 socket-churn reproduction, against ftrace.

Run as root:  .venv/bin/python benchmarks/nested_frees.py [--runs 6] [--pairs 30000]
              [--tree DIR]   (another kmemtrace checkout to run, e.g. an older commit)

Each run records ``--in-memcg`` a Python loop creating and closing socketpairs, while a
private ftrace instance records kmem_cache_alloc/free of sock_inode_cache with unhashed
pointers. Printed per run: the trace's ALLOCs and FREEs of that cache, ftrace's frees of the
objects the workload allocated, how many of those the trace lacks, the LOST it reports,
and the "implied" frees (addresses allocated again while live in the trace).
"""

import argparse
import collections
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kmemtrace.record.ftrace_ref import FtraceInstance, frees_of_workload_objects
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind
from kmemtrace.trace.summary import implied_frees

CACHE = "sock_inode_cache"
CHURN = """
import socket, sys
for _ in range(int(sys.argv[1])):
    a, b = socket.socketpair()
    a.close(); b.close()
"""


def one_run(tmp: Path, pairs: int, tree: Path, tag: str) -> dict:
    script, out = tmp / "churn.py", tmp / f"trace-{tag}"
    script.write_text(CHURN)
    ftrace = FtraceInstance(f"kmt-nested-bench-{os.getpid()}", CACHE)
    try:
        res = subprocess.run([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                              "--in-memcg", "--grace", "2s", "--", "/usr/bin/python3",
                              str(script), str(pairs)], capture_output=True, text=True,
                             cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                             timeout=600)
        text, dropped = ftrace.stop()
    finally:
        ftrace.remove()
    if res.returncode:
        raise SystemExit(res.stderr)
    trace = open_trace(out)
    ids = [c["id"] for c in trace.caches if c["name"] == CACHE or CACHE in c.get("aliases", [])]
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    mine = df[df.cache_id.isin(ids)]
    allocs = mine[mine.kind == EventKind.ALLOC]
    truth = frees_of_workload_objects(text, int(allocs.pid.mode().iloc[0]))
    got = collections.Counter(mine[mine.kind == EventKind.FREE].ptr.astype(np.uint64).map(int))
    return {"allocs": len(allocs), "frees": int((mine.kind == EventKind.FREE).sum()),
            "ftrace_frees": sum(truth.values()), "missing": sum((truth - got).values()),
            "extra": sum((got - truth).values()), "lost": trace.meta["lost"],
            "implied": implied_frees(trace)["total"], "ftrace_dropped": dropped,
            "rescued": trace.meta.get("record", {}).get("nested_rescued", "-")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=30_000)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("nested_frees: run as root")
    print(f"tree {args.tree}, load {Path('/proc/loadavg').read_text().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="kmt-nested-") as tmpdir:
        for i in range(args.runs):
            r = one_run(Path(tmpdir), args.pairs, args.tree, str(i))
            print(f"run {i}: " + "  ".join(f"{k} {v}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
