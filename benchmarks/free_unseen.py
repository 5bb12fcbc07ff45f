"""Where the FREE_UNSEEN residue comes from: each implied free of a trace, against ftrace.

Run as root:  .venv/bin/python benchmarks/free_unseen.py [--seconds 12] [--runs 2]
              [--all-system]

Each run records two `slab_hammer mix` copies under `record --in-memcg` (or, with
``--all-system``, the whole system for the same time while they run outside any recorded
memcg) while a private ftrace instance records every kmem_cache_free and kfree with its
call site, context flags and current task, pointers unhashed. For every ALLOC the trace
holds twice without a FREE between (an implied free, counted by the recorder as LOST
FREE_UNSEEN), the first ftrace free of that address after the first ALLOC says what
happened to the missing FREE:

* ``ftrace saw it``: a traced free no BPF program of ours recorded, grouped by call site,
  context (s = softirq) and the task that was current;
* ``no free in ftrace``: a free without a tracepoint (kmem_cache_free_bulk, kfree_rcu
  batches, SLUB sheaves), or one ftrace's own buffer lost (its overrun count is printed).

Measured on the 6.18 VM (docs/recording.md, "Frees no probe sees").
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from record_overhead import build_workload, load

from kmemtrace.record.probes import find_tracefs
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

FREE_EVENTS = ("kmem_cache_free", "kfree")
LINE = re.compile(r"^\s*(.*?)-(\d+)\s+\[\d+\]\s+(\S+)\s+([\d.]+): (?:kmem_cache_free|kfree): "
                  r"call_site=([^+\s]+)\S* ptr=([0-9a-f]+)")


class FreeTrace:
    """A private tracefs instance recording every slab free, unhashed, on the mono clock."""

    def __init__(self, name: str):
        self.dir = find_tracefs() / "instances" / name
        self.dir.mkdir()
        for rel, value in (("trace_clock", "mono"), ("buffer_size_kb", "262144"),
                           ("options/hash-ptr", "0")):
            (self.dir / rel).write_text(value)
        for event in FREE_EVENTS:
            (self.dir / f"events/kmem/{event}/enable").write_text("1")

    def stop(self) -> tuple[dict[int, list[tuple]], int]:
        """Per pointer, its frees (ts_ns, call site, flags, task); and ftrace's own loss."""
        (self.dir / "tracing_on").write_text("0")
        frees: dict[int, list[tuple]] = collections.defaultdict(list)
        with open(self.dir / "trace") as fh:
            for line in fh:
                m = LINE.match(line)
                if m:
                    comm, _pid, flags, ts, site, ptr = m.groups()
                    frees[int(ptr, 16)].append((round(float(ts) * 1e9), site, flags, comm))
        overrun = sum(int(ln.split(":")[1]) for stats in self.dir.glob("per_cpu/cpu*/stats")
                      for ln in stats.read_text().splitlines() if ln.startswith("overrun:"))
        for event in FREE_EVENTS:
            (self.dir / f"events/kmem/{event}/enable").write_text("0")
        self.dir.rmdir()
        return frees, overrun


def implied(out: Path) -> list[tuple[int, int, str]]:
    """(ptr, ts of the ALLOC left live, its cache) for every implied free of the trace."""
    trace = open_trace(out)
    df = trace.to_pandas(kinds=[EventKind.ALLOC, EventKind.FREE])
    df = df.sort_values(["ptr", "ts_ns"], kind="stable")
    kind, ptr = df.kind.to_numpy(), df.ptr.to_numpy()
    again = np.nonzero((kind[1:] == EventKind.ALLOC) & (kind[:-1] == EventKind.ALLOC)
                       & (ptr[1:] == ptr[:-1]))[0]
    names = {c["id"]: c["name"] for c in trace.caches}
    first = df.iloc[again]
    return [(int(p), int(t), names.get(int(c), "?"))
            for p, t, c in zip(first.ptr.astype(np.uint64), first.ts_ns, first.cache_id,
                               strict=True)]


def one_run(exe: Path, tmp: Path, seconds: float, all_system: bool, tag: str) -> None:
    out = tmp / f"trace-{tag}"
    hammers = f"{exe} {seconds} - - mix & {exe} {seconds} - - mix; wait"
    mode = (["--duration", f"{seconds + 1}s"] if all_system
            else ["--in-memcg", "--grace", "1s", "--", "sh", "-c", hammers])
    ftrace = FreeTrace(f"kmt-free-unseen-{os.getpid()}")
    try:
        rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                                *mode], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        if all_system:
            subprocess.run(["sh", "-c", hammers], stdout=subprocess.DEVNULL, check=True)
        err = rec.communicate(timeout=seconds + 300)[1]
    finally:
        frees, overrun = ftrace.stop()
    if rec.returncode:
        raise SystemExit(err)
    meta = open_trace(out).meta
    rows = implied(out)
    why: collections.Counter = collections.Counter()
    caches: collections.Counter = collections.Counter()
    for ptr, ts, cache in rows:
        caches[cache] += 1
        seen = frees.get(ptr, [])
        i = bisect.bisect_right(seen, (ts,))
        if i == len(seen):
            why[("no free in ftrace",)] += 1
        else:
            _, site, flags, comm = seen[i]
            why[("ftrace saw it", site, "s" if "s" in flags[2:3] else flags, comm)] += 1
    print(f"run {tag} (load {load()}): LOST {meta['lost']}, implied {len(rows)}, "
          f"ftrace overrun {overrun}; by cache {dict(caches.most_common(6))}")
    for key, n in why.most_common(8):
        print(f"  {n:6,}  {' / '.join(key)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--all-system", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("free_unseen: run as root")
    with tempfile.TemporaryDirectory(prefix="kmt-free-unseen-") as tmpdir:
        exe = build_workload(Path(tmpdir))
        for i in range(args.runs):
            one_run(exe, Path(tmpdir), args.seconds, args.all_system, str(i))


if __name__ == "__main__":
    main()
