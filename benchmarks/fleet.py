"""A fleet on one machine: 32 traces x every strategy, Dask local cluster vs plain loops.

    flock /work/bench.lock python benchmarks/fleet.py [--traces 32] [--events 100k]
                                                      [--repeat 3] [--workers N]

Prints the median wall time over ``--repeat`` runs of, end to end as a user runs them:
  loop     ``kmemtrace replay TRACE --strategy all`` for each trace, one after another
  loop -P2 the same, two processes at a time (what ``xargs -P 2`` gives)
  fleet    ``kmemtrace fleet replay --glob ... -o NEW_DIR`` (starts its local cluster)
and the ratios. Every process of the loops imports numpy/pandas/pyarrow/numba and loads
the compiled engine before it replays its trace; the fleet's workers do that once. The
numba cache is warmed before timing, so no variant pays a compile. Prints the load
(``/proc/loadavg``) before and after: the figures are only comparable on a quiet machine.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kmemtrace.params import parse_count
from kmemtrace.strategies import REGISTRY
from kmemtrace.synth import WORKLOADS, synthesize, write_synthesis

KMEMTRACE = [sys.executable, "-m", "kmemtrace"]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def make_traces(root: Path, n: int, events: int) -> list[Path]:
    """``n`` traces, the workloads in turn, seed = index: the same fleet every time."""
    names = list(WORKLOADS)
    paths = []
    for i in range(n):
        workload = names[i % len(names)]
        synthesis, params = synthesize(workload, seed=i, n_events=events, raw_params={})
        path = root / f"host{i:03d}"
        write_synthesis(path, synthesis, workload=workload, seed=i, params=params)
        paths.append(path)
    return paths


def replay_one(trace: Path) -> None:
    subprocess.run([*KMEMTRACE, "replay", str(trace), "--strategy", "all", "--format",
                    "text"], check=True, stdout=subprocess.DEVNULL)


def loop(traces: list[Path], parallel: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(replay_one, traces))
    return time.perf_counter() - t0


def fleet(root: Path, out: Path, workers: int | None, expected: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([*KMEMTRACE, "fleet", "replay", "--glob", str(root / "host*"), "-o",
                    str(out), *(["--workers", str(workers)] if workers else [])],
                   check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    # A new output directory each time, so nothing was skipped: every pair was replayed.
    written = len(list((out / "results").glob("*.parquet")))
    if written != expected:
        raise SystemExit(f"fleet wrote {written} result files, expected {expected}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=32)
    ap.add_argument("--events", default="100k", help="events per trace")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None,
                    help="local cluster size (default: one per CPU)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs; load before: {_load()}")
    with tempfile.TemporaryDirectory(prefix="kmt-fleet-bench-") as tmp:
        root = Path(tmp) / "traces"
        root.mkdir()
        t0 = time.perf_counter()
        traces = make_traces(root, args.traces, parse_count(args.events))
        print(f"fleet: {len(traces)} synthetic traces x {len(REGISTRY)} strategies, "
              f"~{args.events} events each, made in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        replay_one(traces[0])  # numba's cache: loaded, or compiled once, before timing
        print(f"warm-up (one replay, compiles only if the cache is cold): "
              f"{time.perf_counter() - t0:.1f} s\n")
        walls: dict[str, list[float]] = {"loop": [], "loop -P2": [], "fleet": []}
        for i in range(args.repeat):
            walls["loop"].append(loop(traces, 1))
            walls["loop -P2"].append(loop(traces, 2))
            walls["fleet"].append(fleet(root, Path(tmp) / f"out{i}", args.workers,
                                        len(traces) * len(REGISTRY)))
        med = {k: statistics.median(v) for k, v in walls.items()}
        print(f"{'variant':10} {'median s':>9} {'per trace s':>12}  runs")
        for name, wall in med.items():
            runs = " ".join(f"{w:.1f}" for w in walls[name])
            print(f"{name:10} {wall:9.1f} {wall / len(traces):12.2f}  {runs}")
        print(f"\nfleet vs loop: {med['loop'] / med['fleet']:.2f}x faster; "
              f"vs loop -P2: {med['loop -P2'] / med['fleet']:.2f}x")
    print(f"load after: {_load()}")


if __name__ == "__main__":
    main()
