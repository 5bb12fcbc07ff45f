"""Overhead of ``kmemtrace top`` on the slab-hammer workload, beside ``kmemtrace record``.

Run as root:  .venv/bin/python benchmarks/top_overhead.py [--seconds 20] [--reps 3]

The workload is benchmarks/record_overhead.py's: one pinned copy of slab_hammer.c per CPU in
a fresh memcg, churning tmpfs files, socketpairs and pipes. Per rep, interleaved: untraced,
``record -o TRACE`` and ``top --interval 2s`` (full screen, on a pseudo-terminal whose
output is read and dropped, so it renders as for a person), each with the same default
filter (memcg-accounted objects). Printed: the workload's iterations/s, slowdown against
untraced, the tool's CPU use, and what it saw. The issue's target: ``top`` no worse than
``record``. Events seen are checked against ``record``'s trace of the same workload: both
count the same accounted allocations and frees, so their events/s must be close.
"""

import argparse
import os
import pty
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # one workload, one implementation:
from record_overhead import (
    Workload,
    build_workload,
    cpu_seconds,
    load,
    sigint_default,
    trace_facts,
    wait_line,
)


def run_tool(wl: Workload, argv: list[str], ready: str, terminal: bool) -> dict:
    """Start a kmemtrace command, wait for its ready line, run the workload, stop it."""
    master = slave = None
    if terminal:
        master, slave = pty.openpty()
        threading.Thread(target=_drain, args=(master,), daemon=True).start()
    tool = subprocess.Popen([sys.executable, "-m", "kmemtrace", *argv], stdin=slave,
                            stdout=slave, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", "LINES": "60"},
                            preexec_fn=sigint_default)
    try:
        wait_line(tool.stderr, ready)
        cpu0 = cpu_seconds(tool.pid)
        rate = wl.run()
        cpu = cpu_seconds(tool.pid) - cpu0
    finally:
        tool.send_signal(signal.SIGINT)
        err = tool.communicate(timeout=600)[1]
        if slave is not None:
            os.close(slave)
    if tool.returncode:
        raise RuntimeError(f"{argv[0]} failed: {err[-2000:]}")
    res = {"rate": rate, "tool_cpu": cpu / wl.wall}
    seen = re.search(r"saw ([\d,]+) slab events in ([\d.]+) s, lost ([\d,]+)", err)
    if seen:  # top's own count, over its whole session (the workload's run and a margin)
        events, secs, lost = seen.groups()
        res["events_per_s"] = int(events.replace(",", "")) / float(secs)
        res["lost"] = int(lost.replace(",", ""))
    return res


def _drain(fd: int) -> None:
    """Read the pseudo-terminal's output and drop it (a full pty would block the view)."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("top_overhead: run as root")
    names = ("untraced", "record", "top")
    results: dict[str, list[dict]] = {n: [] for n in names}
    print(f"load before: {load()}  cpus: {len(os.sched_getaffinity(0))}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kmt-bench-top-", dir="/var/tmp") as tmpdir:
        tmp = Path(tmpdir)
        exe = build_workload(tmp)
        Workload(exe, 2, "warm").run()
        for rep in range(args.reps):
            for name in names:
                wl = Workload(exe, args.seconds, f"top-{name}-{rep}")
                try:
                    if name == "untraced":
                        res = {"rate": wl.run()}
                    elif name == "record":
                        out = tmp / f"trace-{rep}"
                        res = run_tool(wl, ["record", "-o", str(out)], "recording to", False)
                        facts = trace_facts(out, wl.pids, wl.wall)
                        res["seen_per_s"] = facts["mine"] / wl.wall
                        res["events_per_s"] = facts["events"] / wl.wall
                        res["lost"] = facts["lost"]
                        subprocess.run(["rm", "-rf", str(out)], check=True)
                    else:
                        res = run_tool(wl, ["top", "--interval", "2s"],
                                       "kmemtrace top: watching", True)
                except BaseException:
                    wl.abort()
                    raise
                res["load"] = load()
                results[name].append(res)
                extra = "".join(f"  {k} {v:.3g}" if isinstance(v, float) else f"  {k} {v}"
                                for k, v in res.items() if k != "rate")
                print(f"rep {rep} {name:9} {res['rate']:10,.0f} it/s{extra}", flush=True)
            time.sleep(1)
    report(results, args)


def report(results: dict[str, list[dict]], args) -> None:
    base = statistics.median(r["rate"] for r in results["untraced"])
    print(f"\nworkload: {len(os.sched_getaffinity(0))} pinned slab_hammer copies x "
          f"{args.seconds:.0f} s, {args.reps} interleaved reps, medians; load at end {load()}")
    print(f"{'variant':9} {'it/s':>10} {'slowdown':>9} {'tool CPUs':>10}")
    slow = {}
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        cpu = [r["tool_cpu"] for r in runs if "tool_cpu" in r]
        slow[name] = base / rate
        print(f"{name:9} {rate:10,.0f} {slow[name]:8.2f}x "
              f"{statistics.median(cpu) if cpu else 0:10.2f}")
    seen = statistics.median(r["seen_per_s"] for r in results["record"])
    print(f"record's trace: {seen:,.0f} workload events/s (accounted allocs+frees), "
          f"LOST {[r['lost'] for r in results['record']]}")
    for name in ("record", "top"):
        rates = [r["events_per_s"] for r in results[name] if "events_per_s" in r]
        print(f"{name}: {statistics.median(rates) if rates else 0:,.0f} events/s host-wide "
              f"(record: over the workload's run; top: over its session), "
              f"LOST {[r.get('lost') for r in results[name]]}")
    ok = slow["top"] <= slow["record"] * 1.05
    print(f"target (top no worse than record, 5 % noise): {'met' if ok else 'NOT met'} "
          f"(top x{slow['top']:.2f}, record x{slow['record']:.2f})")


if __name__ == "__main__":
    main()
