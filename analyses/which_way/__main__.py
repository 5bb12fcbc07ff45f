"""``python -m analyses.which_way``: record, calibrate, replay, sweep, check, write REPORT.md.

As root with the v1 memory hierarchy it records the three workload families of
:mod:`analyses.which_way.jobs` (whole system, ``--runs`` times each) and writes a
``recordings.json`` manifest beside the traces; ``--traces DIR`` re-analyses such a folder
without recording again. Otherwise, or with ``--no-record``, the bundled fixtures stand in
(the report then says so). Synthetic workloads are added either way, labelled as such.
``--quick`` shrinks every size for the test.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from analyses.which_way import plots
from analyses.which_way.calibrate import calibrate
from analyses.which_way.freecost import free_costs
from analyses.which_way.jobs import record_all
from analyses.which_way.published import all_checks, grace_period_s
from analyses.which_way.record import Recording, can_record, loadavg, log
from analyses.which_way.report import write_report
from analyses.which_way.sweep import CACHE_ENV, CPUS, ERAS, TraceSpec, run_sweep
from kmemtrace.synth import synthesize, write_synthesis

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "fixtures"
SYNTH = ("container-churn", "long-tail")


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m analyses.which_way", description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE, help="where REPORT.md and PNGs go")
    ap.add_argument("--work", type=Path, default=None,
                    help="where traces go (default: a dated folder under /var/tmp)")
    ap.add_argument("--traces", type=Path, default=None,
                    help="analyse the recordings of an earlier run (its recordings.json)")
    ap.add_argument("--no-record", action="store_true", help="use the fixtures, record nothing")
    ap.add_argument("--quick", action="store_true", help="small sizes (the test)")
    ap.add_argument("--runs", type=int, default=None, help="runs per workload (3; quick 1)")
    ap.add_argument("--cache", action="store_true",
                    help="save each trace's replays beside it and reuse them when present "
                         "(re-analysis with an unchanged kmemtrace only)")
    ap.add_argument("--lock", type=Path, default=None,
                    help="hold an exclusive flock on this file during each recording "
                         "(a shared machine's benchmark lock, e.g. /work/bench.lock)")
    return ap.parse_args(argv)


def load_recordings(folder: Path) -> list[TraceSpec]:
    rows = json.loads((folder / "recordings.json").read_text())
    return [TraceSpec(**(r | {"path": folder / r["path"]})) for r in rows]


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
    runs = args.runs or (1 if args.quick else 3)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = args.traces or args.work or Path("/var/tmp") / f"kmemtrace-which-way-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    Recording.lock = args.lock
    if args.cache:
        os.environ[CACHE_ENV] = "1"
    if args.traces:
        specs, where = load_recordings(args.traces), "recorded on this machine (real)"
    elif not args.no_record and can_record():
        specs, where = record_all(work, runs), "recorded on this machine (real)"
    else:
        specs, where = fixture_specs(), "bundled fixtures (not root, or --no-record)"
    primary = list(dict.fromkeys(s.group for s in specs))
    calib = calibrate([s for s in specs if s.source != "synthetic"])
    specs += synth_specs(work, 1 if args.quick else 2, 20_000 if args.quick else 300_000)
    log(f"replaying {len(specs)} traces x {len(ERAS)} eras, CPUs {CPUS}")
    eras = ERAS if not args.quick else ERAS[-2:]
    df, timelines = run_sweep(specs, eras=eras)
    free = free_costs(2_000 if args.quick else 50_000)
    gp = grace_period_s(10 if args.quick else 100)
    rmdir = [t for s in specs for t in s.rmdir_s]
    checks = all_checks(df, free, gp, rmdir, specs)
    focus = next((g for g in ("churn", "classic") if g in timelines), primary[0])
    figures = [plots.calibration(calib, args.out), plots.timeline(timelines[focus], args.out),
               plots.cpus(df, primary, args.out), plots.way2_period(df, primary, args.out),
               plots.free_cost(free, args.out)]
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    header = {
        "command": "`" + " ".join(["python -m analyses.which_way", *(argv or sys.argv[1:])]) + "`",
        "date": date,
        "host": f"{platform.node()}, kernel {platform.release()}, {os.cpu_count()} CPUs",
        "load (1/5/15 min) at start / end": f"{load_start} / {loadavg()}",
        "traces": where + " + synthetic (labelled)",
        "runs per workload": str(runs),
        "trace folder": str(work),
    }
    write_report(args.out / "REPORT.md", header=header, df=df, groups=primary, specs=specs,
                 calib=calib, checks=checks, figures=figures, free=free)
    df.to_csv(args.out / "metrics.csv", index=False)
    log(f"wrote {args.out / 'REPORT.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
