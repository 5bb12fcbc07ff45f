"""Replay speed and memory: per strategy at the first size, ``--strategy all`` at every size.

    python benchmarks/replay.py [--sizes 10M,50M,100M] [--repeat 3] [--dir /var/tmp] [--seed 1]

For each size a synthetic container-churn trace is written (``kmemtrace synth``, in a child
whose wall time and peak RSS are printed). A longer trace is a longer recording of the same
host: the default 10 M events over 60 s with 200 containers, and N times the events over N
times the duration with N times the containers. Each trace is replayed in fresh child
processes, ``--repeat`` times:

* at the first size (or ``--alone SIZE``), each strategy alone on one thread:
  compiled-loop events/s (the loop's own time), end-to-end events/s (read + decode +
  prepare + loop, the ``replay()`` call's wall time) and the feeding thread's CPU seconds
  (decode, row checks, memcg mapping, prepare: it runs beside the loop, so end to end is
  bounded by the slower of the two);
* at every size, ``--strategy all`` (strategies in parallel threads, one per CPU): wall
  time, events/s per strategy end to end, strategy-events/s, read+prepare seconds, and the
  child's peak RSS (``wait4``) with where it goes: the RSS before the replay (interpreter,
  libraries, compiled engine), the Arrow pool's peak (batches decoded and in flight), the
  models' state (every array each strategy's model holds at the end: they only grow, so
  that is their peak; and the memcg ids), and the largest RSS sampled in each quarter of
  the trace;
* the same ``--strategy all`` replay of a ``steady`` trace of each size (8 long-lived
  memcgs, no offline: the live set is bounded, so the model state is too).

The closing table puts peak RSS, model state and "RSS - model state" side by side for both
workloads. Model state may grow with the trace when the workload makes it grow (container
churn: more containers, objects that outlive them, dead caches ``current`` never
destroys); everything else is the replay's own (batches in flight, allocator slack,
per-batch leftovers) and must be flat: within :data:`TOLERANCE_MB`, one batch in flight
more or less at the moment of the peak.
CPU time per event (the child's process CPU time over the replay, every thread) is printed
beside each wall-clock rate: on a shared machine it is the figure load disturbs least.

Medians of the repeats (RSS: the largest), with the load average before and after each
size. A first child compiles the engine if it must, and each child first replays a small
committed fixture, so that neither compiling nor loading the engine is timed or counted.
Traces go to a temporary directory under ``--dir``, removed at the end. Quote medians and
ratios: the machine is shared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from kmemtrace.model.state import C_PEAK_LIVE_OBJS
from kmemtrace.params import parse_count
from kmemtrace.strategies import REGISTRY

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "steady"
BASE_EVENTS, BASE_SECONDS, BASE_MEMCGS = 10_000_000, 60, 200  # one host's rate
# "RSS - model state" counts as flat across sizes within this: the peak RSS is taken at
# whatever moment the batches in flight were most numerous, and one batch more (Arrow's
# decoded columns, ~54 B a row, plus the prepared memcg column, 8 B a row, of 128 Ki rows)
# is 8 MB.
TOLERANCE_MB = 8


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(cmd: list[str]) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return out, time.perf_counter() - t0, usage.ru_maxrss / 1024


def _child(trace_dir: str, strategy: str, threads: int | None) -> None:
    """One replay, after a warm-up on a fixture; prints its timings and memory as JSON."""
    import pyarrow as pa

    from kmemtrace.replay.engine import replay
    from kmemtrace.strategies import select
    from kmemtrace.trace.reader import open_trace

    replay(open_trace(FIXTURE), select(strategy, {}), samples=10, threads=threads)
    base = _rss_mb()
    trace = open_trace(trace_dir)
    done, rss_at = [0], []  # RSS against events replayed, sampled on a thread
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            rss_at.append((done[0], _rss_mb()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0, c0, f0 = time.perf_counter(), time.process_time(), time.thread_time()
    r = replay(trace, select(strategy, {}), threads=threads,
               progress=lambda n: done.__setitem__(0, done[0] + n))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    feed = time.thread_time() - f0  # this thread decodes and prepares; the loops have theirs
    stop.set()
    sampler.join()
    print(json.dumps({"events": r.events, "wall": wall, "cpu": cpu, "feed_cpu": feed,
                      "read": r.read_seconds,
                      "loop": {run.strategy.name: run.loop_seconds for run in r.runs},
                      "base_rss": base, "arrow_peak": pa.default_memory_pool().max_memory()
                      / 2**20, "models": {run.strategy.name: _arrays_mb(run.model)
                                          for run in r.runs},
                      "python": _python_side_mb(r),
                      "live_objects": {run.strategy.name:
                                       int(run.model.ctr[C_PEAK_LIVE_OBJS])
                                       for run in r.runs},
                      "rss_at": _quartiles(rss_at, r.events)}))


def _arrays_mb(model) -> dict[str, float]:
    """MB of each of a model's arrays (they only grow, so the end is their peak)."""
    return {name: a.nbytes / 2**20 for name, a in model._asdict().items()}


def _python_side_mb(r) -> float:
    """What the replay keeps in Python objects: the memcg ids, the offline times, notes."""
    ids = sys.getsizeof(r.memcg_ids) + sum(sys.getsizeof(i) for i in r.memcg_ids)
    return (2 * ids + r.offline_ns.nbytes  # the id list, and the id -> index dict's share
            + sum(sys.getsizeof(x) for x in r.notes + r.warnings)) / 2**20


def _quartiles(rss_at: list[tuple[int, float]], events: int) -> list[float]:
    """The largest RSS sampled in each quarter of the trace: flat if memory is bounded."""
    return [max((mb for n, mb in rss_at if q * events <= 4 * n < (q + 1) * events),
                default=0.0) for q in range(4)]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _replays(trace: Path, strategy: str, threads: int | None, repeat: int):
    cmd = [sys.executable, __file__, "--child", str(trace), "--strategy", strategy]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    runs = []
    for _ in range(repeat):
        out, _, rss = _run(cmd)
        runs.append({**json.loads(out), "rss": rss})
    return runs


def _median(runs: list[dict], key) -> float:
    return statistics.median(key(r) for r in runs)


def _per_strategy(trace: Path, repeat: int) -> None:
    print(f"  each strategy alone, one thread (medians of {repeat}):")
    print(f"  {'strategy':10} {'loop Mev/s':>11} {'e2e Mev/s':>10} {'wall s':>7} "
          f"{'CPU ns/ev':>10} {'feed CPU s':>11}")
    for name in REGISTRY:
        runs = _replays(trace, name, 1, repeat)
        n = runs[0]["events"]
        loop = _median(runs, lambda r, name=name: r["loop"][name])
        wall = _median(runs, lambda r: r["wall"])
        cpu = _median(runs, lambda r: r["cpu"])
        feed = _median(runs, lambda r: r["feed_cpu"])
        print(f"  {name:10} {n / loop / 1e6:11.1f} {n / wall / 1e6:10.1f} {wall:7.2f} "
              f"{cpu / n * 1e9:10.1f} {feed:11.2f}")


def _all(trace: Path, repeat: int) -> dict:
    """``--strategy all`` over ``trace``: rates, and the memory of the run with the largest
    peak RSS (returned, for the closing table)."""
    runs = _replays(trace, "all", None, repeat)
    n, k = runs[0]["events"], len(runs[0]["loop"])
    wall = _median(runs, lambda r: r["wall"])
    loops = {name: n / _median(runs, lambda r, name=name: r["loop"][name]) / 1e6
             for name in runs[0]["loop"]}
    slowest = min(loops, key=loops.get)
    print(f"  --strategy all ({k} strategies, threads = usable CPUs = "
          f"{len(os.sched_getaffinity(0))}), medians of {repeat}:")
    print(f"    wall {wall:.1f} s; end to end {n / wall / 1e6:.1f} M events/s per strategy, "
          f"{k * n / wall / 1e6:.1f} M strategy-events/s")
    print(f"    read+decode+prepare {_median(runs, lambda r: r['read']):.1f} s (one thread, "
          f"overlapped with the loops); slowest loop {slowest} {loops[slowest]:.1f} M ev/s")
    print(f"    CPU {_median(runs, lambda r: r['cpu']) / n / k * 1e9:.1f} ns per "
          "strategy-event (all threads)")
    return _memory(max(runs, key=lambda r: r["rss"]))


def _memory(run: dict) -> dict:
    """Where the peak RSS of one ``--strategy all`` replay goes; its closing-table row."""
    models = run["models"]
    state = sum(sum(arrays.values()) for arrays in models.values()) + run["python"]
    rest = run["rss"] - run["base_rss"] - run["arrow_peak"] - state
    print(f"    peak RSS {run['rss']:.0f} MB (wait4); RSS by quarter of the trace "
          + " / ".join(f"{mb:.0f}" for mb in run["rss_at"]) + " MB:")
    print(f"      {run['base_rss']:.0f} MB before the replay (interpreter, libraries, compiled "
          f"engine, a fixture replayed); Arrow pool peak {run['arrow_peak']:.0f} MB (batches "
          f"decoded and in flight); model state {state:.1f} MB (the arrays below, and "
          f"{run['python']:.1f} MB of memcg ids); the rest {rest:.0f} MB (prepared columns "
          "in flight, allocator slack)")
    for name, arrays in models.items():
        big = sorted(arrays.items(), key=lambda kv: -kv[1])[:5]
        print(f"      {name:9} {sum(arrays.values()):6.1f} MB, "
              f"{run['live_objects'][name]:9,} live objects at the peak: "
              + ", ".join(f"{k} {mb:.1f}" for k, mb in big))
    return {"events": run["events"], "rss": run["rss"], "state": state,
            "arrow": run["arrow_peak"],
            "live": max(run["live_objects"].values())}


def _synth(workload: str, trace: Path, events: int, seed: int) -> None:
    """Write a ``workload`` trace of ``events`` at one host's rate: duration (and, for
    container churn, the containers) scale with the events."""
    scale = events / BASE_EVENTS
    params = ["-p", f"duration={BASE_SECONDS * scale:g}s"]
    if workload == "container-churn":
        params += ["-p", f"n_memcgs={round(BASE_MEMCGS * scale)}"]
    _, wall, rss = _run([sys.executable, "-m", "kmemtrace", "synth", workload, "-o",
                         str(trace), "--seed", str(seed), "--events", str(events), *params])
    mb = sum(f.stat().st_size for f in trace.rglob("*.parquet")) / 1e6
    print(f"  synth {workload} seed {seed}, {' '.join(params[1::2])}: {wall:.1f} s, "
          f"peak RSS {rss:.0f} MB, {mb:.0f} MB on disk")


def _flatness(rows: dict[str, list[dict]]) -> None:
    """The closing table: peak RSS against trace length, model state beside it."""
    print(f"peak RSS against trace length, --strategy all (MB; flat = within "
          f"{TOLERANCE_MB} MB, one batch in flight):")
    print(f"  {'workload':16} {'events':>7} {'peak RSS':>9} {'model state':>12} "
          f"{'RSS - state':>12} {'Arrow peak':>11} {'peak live objs':>15}")
    for workload, sized in rows.items():
        for row in sized:
            print(f"  {workload:16} {row['events'] / 1e6:6.0f}M {row['rss']:9.0f} "
                  f"{row['state']:12.1f} {row['rss'] - row['state']:12.0f} "
                  f"{row['arrow']:11.0f} {row['live']:15,}")
        rest = [row["rss"] - row["state"] for row in sized]
        spread = max(rest) - min(rest)
        print(f"  {workload}: RSS - model state spans {spread:.0f} MB over the sizes "
              f"({rest[-1] - rest[0]:+.0f} MB first to last): "
              + ("flat" if spread <= TOLERANCE_MB else "GROWS") + "; model state "
              f"{sized[0]['state']:.0f} -> {sized[-1]['state']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10M,50M,100M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--alone", default=None,
                    help="size at which each strategy also runs alone (default: the first; "
                         "'none' to skip)")
    ap.add_argument("--no-steady", action="store_true",
                    help="skip the steady (bounded live set) lane")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.strategy, args.threads)
        return
    workloads = ["container-churn"] + ([] if args.no_steady else ["steady"])
    rows: dict[str, list[dict]] = {w: [] for w in workloads}
    # Compile the engine (if these sources are not compiled yet) in a child of its own: a
    # measured child that compiled would count LLVM's ~500 MB in its peak RSS.
    _run([sys.executable, __file__, "--child", str(FIXTURE), "--strategy", "way1"])
    with tempfile.TemporaryDirectory(prefix="kmt-bench-", dir=args.dir) as tmp:
        for size in args.sizes.split(","):
            for workload in workloads:
                trace = Path(tmp) / f"{workload}-{size}"
                print(f"{workload}, {size} events ({_load()})")
                _synth(workload, trace, parse_count(size), args.seed)
                if workload == "container-churn" and size == (args.alone
                                                              or args.sizes.split(",")[0]):
                    _per_strategy(trace, args.repeat)
                rows[workload].append(_all(trace, args.repeat))
                print(f"  ({_load()})")
                subprocess.run(["rm", "-rf", str(trace)], check=True)
    _flatness(rows)
    print(f"({_load()})")


if __name__ == "__main__":
    main()
