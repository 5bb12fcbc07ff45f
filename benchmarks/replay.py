"""Replay speed per strategy on a synthetic 10-million-event trace.

    python benchmarks/replay.py [--events 10M] [--repeat 3] [--workload container-churn]

For each strategy alone, prints the median over ``--repeat`` runs of: compiled-loop
events/s, end-to-end events/s (read + prepare + loop), wall time; then the one-pass
``--strategy all`` run, and the process's peak RSS. The first call of a process loads the
compiled code from numba's cache (or compiles it); that warm-up is done before timing and
reported separately. Quote medians and ratios: the machines are noisy.
"""

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import open_trace


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="10M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workload", default="container-churn")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmt-bench-") as tmp:
        path = Path(tmp) / "trace"
        t0 = time.perf_counter()
        # In a child process, so that the peak RSS below is the replay's own.
        subprocess.run([sys.executable, "-m", "kmemtrace", "synth", args.workload, "-o",
                        str(path), "--seed", str(args.seed), "--events", args.events],
                       check=True, stdout=subprocess.DEVNULL)
        trace = open_trace(path)
        print(f"trace: {args.workload} seed {args.seed}, {trace.n_events:,} events, "
              f"synthesised in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        replay(trace, select("all", {}), samples=10)  # warm the compiled code
        print(f"warm-up (cache load / compile + one pass): {time.perf_counter() - t0:.1f} s\n")
        print(f"{'strategy':10} {'loop Mev/s':>11} {'e2e Mev/s':>10} {'wall s':>7}")
        loop_rates = {}
        for name in REGISTRY:
            loops, walls = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = replay(trace, select(name, {}))
                walls.append(time.perf_counter() - t0)
                loops.append(r.runs[0].loop_seconds)
            n = r.events
            loop_rates[name] = n / statistics.median(loops) / 1e6
            print(f"{name:10} {loop_rates[name]:11.1f} {n / statistics.median(walls) / 1e6:10.1f} "
                  f"{statistics.median(walls):7.2f}")
        walls = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r = replay(trace, select("all", {}))
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        print(f"\n--strategy all, one pass: {wall:.2f} s = {len(REGISTRY) * n / wall / 1e6:.1f} M "
              f"strategy-events/s; read+prepare {r.read_seconds:.2f} s of it")
        slowest = min(loop_rates, key=loop_rates.get)
        print(f"slowest strategy loop: {slowest} {loop_rates[slowest]:.1f} M ev/s "
              f"({loop_rates[slowest] / 5:.1f}x the 5 M ev/s bar)")
        print(f"peak RSS of the replay process: {_peak_rss_mb():.0f} MB "
              f"(the trace is {sum(p['bytes'] for p in trace.meta['parts']) / 1e6:.0f} MB "
              "on disk)")


if __name__ == "__main__":
    main()
