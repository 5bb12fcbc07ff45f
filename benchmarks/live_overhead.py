"""What `record --live` costs the recording: slowdown and loss with and without the what-if.

Run as root:  cd benchmarks && flock /work/bench.lock ../.venv/bin/python live_overhead.py
              [--seconds 8] [--reps 2] [--strategy all] [--check]

Same slab-hammer workload and method as ``record_overhead.py`` (one pinned copy per CPU in
a fresh memcg, ``--all-objects``): per rep, interleaved, an untraced run, a plain
``record`` and a ``record --live --strategy all``. The slowdown of a variant is the
untraced iteration rate over the variant's; loss is what each trace's meta reports (LOST)
and, for an independent count, ftrace's hits of the same tracepoints by the workload's pids
minus the trace's rows of those pids (with ``--check``: one more rep of each traced
variant, counted by a private tracefs instance; ftrace adds its own cost to that rep, so it
is left out of the medians).
The what-if's own figures: events replayed, skipped while behind, and whether its final
metrics were exact.

Target (issue 15): with --live no more loss than without, slowdown within 10 % of plain
``record`` (live slowdown / plain slowdown <= 1.10).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from record_overhead import Workload, build_workload, load, traced_kmemtrace

VARIANTS = ("untraced", "record", "record --live")


def traced(wl: Workload, tmp: Path, tag: str, live: bool, strategy: str, check: bool) -> dict:
    live_json = tmp / f"live-{tag}.json"
    extra = ("--live", "--strategy", strategy, "--live-json", str(live_json)) if live else ()
    res = traced_kmemtrace(wl, tmp, tag, check, extra)
    if live:
        final = json.loads(live_json.read_text())
        res |= {"replayed": final["events"], "skipped": final["skipped"],
                "late": final["late"], "exact": final["exact"]}
        live_json.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--strategy", default="all")
    ap.add_argument("--check", action="store_true", help="one more rep counted by ftrace")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("live_overhead: run as root")
    results: dict[str, list[dict]] = {n: [] for n in VARIANTS}
    checks: dict[str, dict] = {}
    print(f"load before: {load()}  cpus: {len(os.sched_getaffinity(0))}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kmt-bench-", dir="/var/tmp") as tmpdir:
        tmp = Path(tmpdir)
        exe = build_workload(tmp)
        Workload(exe, 2, "warm").run()
        for rep in range(args.reps + args.check):
            check = rep == args.reps  # the ftrace-counted rep, outside the medians
            for name in VARIANTS:
                if check and name == "untraced":
                    continue
                tag = f"live-{name.replace(' --', '-')}-{rep}"
                wl = Workload(exe, args.seconds, tag)
                try:
                    res = ({"rate": wl.run()} if name == "untraced" else
                           traced(wl, tmp, tag, name.endswith("--live"), args.strategy, check))
                except BaseException:
                    wl.abort()
                    raise
                res["load"] = load()
                (checks.__setitem__(name, res) if check else results[name].append(res))
                extra = "".join(f"  {k} {v}" for k, v in res.items() if k != "rate")
                print(f"{'check' if check else f'rep {rep}'} {name:14} {res['rate']:10,.0f} "
                      f"it/s{extra}", flush=True)
    report(results, checks, args)


def report(results: dict[str, list[dict]], checks: dict[str, dict], args) -> None:
    base = statistics.median(r["rate"] for r in results["untraced"])
    print(f"\nworkload: {len(os.sched_getaffinity(0))} pinned copies x {args.seconds:.0f} s, "
          f"{args.reps} interleaved reps, medians; load at end {load()}")
    print(f"{'variant':14} {'it/s':>10} {'slowdown':>9} {'events/s':>11} {'LOST':>9} "
          f"{'recorder CPUs':>13}")
    slow = {}
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        slow[name] = base / rate
        evs = [r["captured_per_s"] for r in runs if "captured_per_s" in r]
        lost = [r["lost"] for r in runs if "lost" in r]
        cpu = [r["recorder_cpu"] for r in runs if "recorder_cpu" in r]
        print(f"{name:14} {rate:10,.0f} {slow[name]:8.2f}x "
              f"{statistics.median(evs) if evs else 0:11,.0f} "
              f"{statistics.median(lost) if lost else 0:9,.0f} "
              f"{statistics.median(cpu) if cpu else 0:13.2f}")
    live = results["record --live"]
    print("what-if: replayed " + ", ".join(f"{r['replayed']:,}" for r in live)
          + "; skipped " + ", ".join(f"{r['skipped']:,}" for r in live)
          + "; late " + ", ".join(f"{r['late']:,}" for r in live)
          + "; exact " + ", ".join(str(r["exact"]) for r in live))
    for name, r in checks.items():
        ref, got = r["reference"], r["mine"]
        print(f"loss vs ftrace, {name}: ftrace {ref:,}, trace {got:,}, reported LOST "
              f"{r['lost']:,}, unreported {max(0, ref - got - r['lost']):,}")
    ratio = slow["record --live"] / slow["record"]
    more_loss = (statistics.median(r["lost"] for r in live)
                 > statistics.median(r["lost"] for r in results["record"]))
    print(f"live slowdown / plain slowdown: {ratio:.3f} (target <= 1.10: "
          f"{'met' if ratio <= 1.10 else 'NOT met'}); more loss with --live: "
          f"{'yes (target NOT met)' if more_loss else 'no (target met)'}")


if __name__ == "__main__":
    main()
