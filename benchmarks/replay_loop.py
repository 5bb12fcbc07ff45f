"""The compiled replay loop's CPU time per event, per strategy, old code beside new.

    python benchmarks/replay_loop.py [--events 10M] [--repeat 3] [--baseline CHECKOUT]
                                     [--strategies all] [--dir /var/tmp] [--seed 1]

Why CPU time: ``benchmarks/replay.py`` times the loop on the wall clock, which on a shared
2-core machine measures the neighbours as much as the code (the same build read 0.55 s or
1.6 s for 10 M events within minutes). Here each strategy replays alone in a fresh child,
and the loop thread's own CPU time (``time.thread_time`` around every ``run_events``
batch) is summed; the minimum of the repeats is the least disturbed.

With ``--baseline`` (the root of another checkout, e.g. ``git worktree add /tmp/base
main``), every strategy runs in both checkouts alternately, so that both see the same
machine state, and the ratio is printed. The digest of each replay's final model state
(counters, integrals, time series, memcgs, destroy log) must be the same in both: a faster
loop that changed a result is a failure, not a speed-up.

The trace is ``kmemtrace synth container-churn`` at one host's rate (the default of
``benchmarks/replay.py``: 10 M events over 60 s with 200 containers), written under
``--dir`` and removed at the end.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
FIXTURE = HERE.parents[1] / "fixtures" / "steady"
BASE_EVENTS, BASE_SECONDS, BASE_MEMCGS = 10_000_000, 60, 200


def _use_checkout(root: str) -> None:
    """Import ``kmemtrace`` from ``root``, not from the editable install of this venv."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    sys.path.insert(0, root)


def _child(trace: str, strategy: str) -> None:
    """One replay of ``strategy``: loop CPU seconds, events and the result's digest."""
    from kmemtrace.model.state import C_DLOG_LEN
    from kmemtrace.replay import engine
    from kmemtrace.strategies import select
    from kmemtrace.trace.reader import open_trace

    cpu = [0.0]
    run_chunk = engine._run_chunk

    def timed(model, pol, chunk):
        t0 = time.thread_time()
        out = run_chunk(model, pol, chunk)
        cpu[0] += time.thread_time() - t0
        return out

    engine._run_chunk = timed
    engine.replay(open_trace(FIXTURE), select(strategy, {}), samples=10, threads=1)  # load
    cpu[0] = 0.0
    r = engine.replay(open_trace(trace), select(strategy, {}), threads=1)
    m = r.runs[0].model
    h = hashlib.sha256()
    for a in (m.ctr, m.fctr, m.series, m.memcg, m.vsample, m.dlog[:, :m.ctr[C_DLOG_LEN]],
              m.integ):
        h.update(a.tobytes())
    print(json.dumps({"events": r.events, "cpu": cpu[0], "digest": h.hexdigest()[:16]}))


def _run(root: str, trace: Path, strategy: str) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "--child", str(trace), "--strategy",
                          strategy, "--src", root], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.splitlines()[-1])


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", default="10M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="root of another checkout to compare with")
    ap.add_argument("--strategies", default="all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _use_checkout(args.src)
        _child(args.child, args.strategy)
        return
    from kmemtrace.params import parse_count
    from kmemtrace.strategies import REGISTRY

    names = list(REGISTRY) if args.strategies == "all" else args.strategies.split(",")
    roots = {"new": str(HERE.parents[1])}
    if args.baseline:
        roots = {"old": str(Path(args.baseline).resolve()), **roots}
    events = parse_count(args.events)
    scale = events / BASE_EVENTS
    with tempfile.TemporaryDirectory(prefix="kmt-loop-", dir=args.dir) as tmp:
        trace = Path(tmp) / "trace"
        subprocess.run([sys.executable, "-m", "kmemtrace", "synth", "container-churn", "-o",
                        str(trace), "--seed", str(args.seed), "--events", str(events),
                        "-p", f"duration={BASE_SECONDS * scale:g}s",
                        "-p", f"n_memcgs={round(BASE_MEMCGS * scale)}"],
                       check=True, capture_output=True)
        for root in roots.values():  # compile (or load) each checkout's engine untimed
            _run(root, FIXTURE, names[0])
        print(f"{args.events} events, loop CPU time per event, best of {args.repeat} "
              f"({_load()})")
        head = "".join(f" {k + ' ns/ev':>11} {k + ' Mev/s':>10}" for k in roots)
        print(f"  {'strategy':10}{head}" + ("   new/old" if args.baseline else "")
              + "  digest")
        for name in names:
            runs = {k: [] for k in roots}
            for _ in range(args.repeat):
                for k, root in roots.items():
                    runs[k].append(_run(root, trace, name))
            digests = {r["digest"] for rs in runs.values() for r in rs}
            n = runs["new"][0]["events"]
            best = {k: min(r["cpu"] for r in rs) for k, rs in runs.items()}
            cols = "".join(f" {best[k] / n * 1e9:11.1f} {n / best[k] / 1e6:10.1f}"
                           for k in roots)
            ratio = f"   {best['old'] / best['new']:7.2f}x" if args.baseline else ""
            same = next(iter(digests)) if len(digests) == 1 else "DIFFERENT: " + " ".join(
                sorted(digests))
            print(f"  {name:10}{cols}{ratio}  {same}", flush=True)
            if len(digests) != 1:
                raise SystemExit(f"{name}: results differ between checkouts or repeats")
        print(f"  ({_load()})")


if __name__ == "__main__":
    main()
