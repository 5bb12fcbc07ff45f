"""Memcg life-cycle capture under churn: how many creations+removals per second, none lost?

Run as root:  .venv/bin/python benchmarks/lifecycle_rate.py [--memcgs 2500] [--jobs 4] [--reps 3]

Each rep records `kmemtrace record --cgroup P` while --jobs copies of lab/memcg_churn.py run
at once under the memcg P, each making --memcgs memcgs in a burst (one mkdir, one rmdir) and
as many one by one, with a task in every 500th. The independent count is the workload's own:
the id (directory inode) of every memcg it made. Printed per rep and as medians: memcg
creations+removals per second (workload wall), MKDIR and OFFLINE rows missing from the trace,
and the LOST life-cycle counts (reasons LIFECYCLE_RING, LIFECYCLE_MAP). Quote `uptime` with it.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from record_overhead import wait_line  # noqa: E402  (benchmarks/ is sys.path[0])

from kmemtrace.trace.reader import open_trace  # noqa: E402
from kmemtrace.trace.schema import EventKind  # noqa: E402
from lab.memcg_churn import parse  # noqa: E402

MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
CHURN = REPO / "lab" / "memcg_churn.py"


def one_rep(n: int, jobs: int, workdir: Path) -> dict:
    parent = MEMCG_ROOT / f"kmt-bench-lc-{os.getpid()}"
    parent.mkdir()
    out = workdir / f"trace-{time.monotonic_ns()}"
    rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                            "--cgroup", parent.name], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "COLUMNS": "300"})
    try:
        wait_line(rec.stderr, "recording to")
        started = time.monotonic()
        churners = [subprocess.Popen(["/usr/bin/python3", str(CHURN), str(parent), str(n),
                                      "500"], stdout=subprocess.PIPE, text=True)
                    for _ in range(jobs)]
        outputs = [c.communicate()[0] for c in churners]
        wall = time.monotonic() - started
        if any(c.returncode for c in churners):
            raise SystemExit("a churner failed")
        time.sleep(2)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.communicate(timeout=300)
        parent.rmdir()
    made = {i for text in outputs for i in parse(text)["made"]}
    trace = open_trace(out)
    df = trace.to_pandas()
    by_reason = trace.meta["lost"]["by_reason"]
    missing = {kind.name: len(made - set(df.memcg_id[df.kind == kind].tolist()))
               for kind in (EventKind.MEMCG_MKDIR, EventKind.MEMCG_OFFLINE)}
    return {"memcgs": len(made), "ops_per_s": 2 * len(made) / wall, **missing,
            "LIFECYCLE_RING": int(by_reason.get("LIFECYCLE_RING", 0)),
            "LIFECYCLE_MAP": int(by_reason.get("LIFECYCLE_MAP", 0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memcgs", type=int, default=2500, help="per churner and phase")
    ap.add_argument("--jobs", type=int, default=4, help="churners at once")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"load: {Path('/proc/loadavg').read_text().strip()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kmt-bench-lc-") as tmp:
        for rep in range(args.reps):
            row = one_rep(args.memcgs, args.jobs, Path(tmp))
            rows.append(row)
            print(f"rep {rep + 1}: " + ", ".join(
                f"{k}={v:,.0f}" if isinstance(v, float) else f"{k}={v:,}"
                for k, v in row.items()), flush=True)
    print("median: " + ", ".join(f"{k}={statistics.median(r[k] for r in rows):,.0f}"
                                 for k in rows[0]))
    print(f"load: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
