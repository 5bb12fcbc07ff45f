"""``python -m analyses.which_way``: record, replay, sweep, check, write REPORT.md.

As root (and with the v1 memory hierarchy) it records real workloads first; otherwise, or
with ``--no-record``, the bundled fixtures stand in for them. Synthetic workloads are
generated with several seeds either way. ``--quick`` shrinks every size for the test.
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from analyses.which_way import plots
from analyses.which_way.freecost import free_costs
from analyses.which_way.published import all_checks, churn_groups
from analyses.which_way.record import (
    can_record,
    grace_period_s,
    record_churn,
    record_in_memcg,
)
from analyses.which_way.report import write_report
from analyses.which_way.sweep import TraceSpec, run_sweep
from kmemtrace.synth import synthesize, write_synthesis

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "fixtures"
SINGLE = (("files", 3.0, 300), ("sockets", 3.0, 200), ("build", 3.0, 40))
SYNTH = ("container-churn", "long-tail")


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m analyses.which_way", description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE, help="where REPORT.md and PNGs go")
    ap.add_argument("--work", type=Path, default=None,
                    help="where traces go (default: a dated folder under /var/tmp)")
    ap.add_argument("--no-record", action="store_true", help="use the fixtures, record nothing")
    ap.add_argument("--quick", action="store_true", help="small sizes (the test)")
    ap.add_argument("--runs", type=int, default=None, help="runs per workload (3; quick 2)")
    ap.add_argument("--containers", type=int, default=40, help="memcgs per churn recording")
    return ap.parse_args(argv)


def recorded_specs(work: Path, runs: int, containers: int) -> list[TraceSpec]:
    specs = []
    rng = np.random.default_rng(5)
    for run in range(runs):
        for kind, seconds, keep in SINGLE:
            r = record_in_memcg(work / f"{kind}-{run}", kind, seconds, keep, run)
            specs.append(TraceSpec(r.group, "real", run, r.path))
        r = record_churn(work / f"churn-{run}", containers, 0.25, 40, run, rng)
        specs.append(TraceSpec("churn", "real", run, r.path, r.rmdir_s))
    return specs


def fixture_specs() -> list[TraceSpec]:
    return [TraceSpec(f"fixture {name}", "fixture", 0, FIXTURES / name)
            for name in ("default", "long-tail", "steady")]


def synth_specs(work: Path, runs: int, events: int) -> list[TraceSpec]:
    specs = []
    for name in SYNTH:
        for run in range(runs):
            path = work / f"synth-{name}-{run}"
            synthesis, params = synthesize(name, seed=100 + run, n_events=events, raw_params={})
            write_synthesis(path, synthesis, workload=name, seed=100 + run, params=params,
                            overwrite=True)
            specs.append(TraceSpec(f"synth {name}", "synthetic", run, path))
    return specs


def main(argv=None) -> int:
    args = parse(argv)
    runs = args.runs or (2 if args.quick else 3)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.work or Path("/var/tmp") / f"kmemtrace-which-way-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = not args.no_record and can_record()
    specs = recorded_specs(work, runs, args.containers) if record else fixture_specs()
    primary = sorted({s.group for s in specs}, key=[s.group for s in specs].index)
    specs += synth_specs(work, runs, 20_000 if args.quick else 300_000)
    print(f"which_way: replaying {len(specs)} traces", file=sys.stderr, flush=True)
    df, timelines = run_sweep(specs)
    free = free_costs(2_000 if args.quick else 50_000)
    gp = grace_period_s(10 if args.quick else 100)
    rmdir = [t for s in specs for t in s.rmdir_s]
    checks = all_checks(df, free, gp, rmdir)
    churny = [g for g in churn_groups(df) if g in primary] or churn_groups(df)
    focus = churny[0] if churny else primary[0]
    figures = [plots.timeline(timelines[focus], args.out)]
    if "synth container-churn" in timelines and focus != "synth container-churn":
        figures.append(plots.timeline(timelines["synth container-churn"], args.out))
    figures += [plots.way2_period(df, args.out), plots.eras(df, focus, args.out),
                plots.hot_path(df, focus, args.out), plots.free_cost(free, args.out)]
    date = subprocess.run(["date"], capture_output=True, text=True).stdout.strip()
    header = {
        "command": "`" + " ".join(["python -m analyses.which_way", *(argv or sys.argv[1:])]) + "`",
        "date": date,
        "host": f"{platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs",
        "traces": ("recorded on this machine (real) + synthetic" if record else
                   "bundled fixtures (not root or --no-record) + synthetic"),
        "runs per workload": str(runs),
        "trace folder": str(work),
    }
    write_report(args.out / "REPORT.md", header=header, df=df, groups=primary, checks=checks,
                 figures=figures, free=free)
    df.to_csv(args.out / "metrics.csv", index=False)
    print(f"which_way: wrote {args.out / 'REPORT.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
