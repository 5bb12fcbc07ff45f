"""The floor under any BPF recorder of the slab tracepoints, on this kernel and machine.

Run as root:  .venv/bin/python benchmarks/probe_floor.py [--seconds 10] [--reps 3] [--mode eventfd]
                [--baseline DIR]

The slab-hammer workload (one pinned copy per CPU, in a fresh memcg) runs untraced, then
with ``bpf/floor.bpf.c`` attached as raw tracepoints to the four kmem tracepoints kmemtrace
uses: ``floor_empty`` (returns at once: the tracepoint, BPF dispatch and recursion guard)
and ``floor_ring`` (one 40-byte ring-buffer record per event, never read). With
``kernel.bpf_stats_enabled`` on during the traced runs, each program's run count (= events)
and run time come from its fdinfo. Printed: iterations/s, slowdown, events/s, BPF ns per
event, and the added cost per event seen by the workload (CPU-ns: both CPUs' time over the
events), medians of interleaved reps, with the load. No recorder can be cheaper than
``floor_ring`` per event, whatever its user space does.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from record_overhead import (
    KMEM_EVENTS,
    Workload,
    build_workload,
    load,
    sigint_default,
    thread_cpu,
    trace_facts,
    wait_line,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kmemtrace.record import bccload, headers

FLOOR_C = Path(__file__).resolve().parents[1] / "bpf" / "floor.bpf.c"
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def prog_stats(fd: int, pid: str = "self") -> tuple[int, int]:
    """(run_cnt, run_time_ns) of one loaded program, from its fdinfo."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
                  .splitlines() if ":" in line)
    return int(fields.get("run_cnt", 0)), int(fields.get("run_time_ns", 0))


def bpf_prog_fdinfo(pid: int):
    """(fd number, fdinfo fields) of every BPF program process ``pid`` holds."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        yield int(fd.name), dict(line.split(":", 1) for line in info.splitlines() if ":" in line)


def programs_of(pid: int) -> dict[str, tuple[int, int]]:
    """name -> (run_cnt, run_time_ns) of every BPF program process ``pid`` holds."""
    return {f"{fields.get('prog_tag', '?').strip()[:8]}:{fd}":
            (int(fields.get("run_cnt", 0)), int(fields.get("run_time_ns", 0)))
            for fd, fields in bpf_prog_fdinfo(pid)}


def with_kmemtrace(wl: Workload, tmp: Path, source: Path | None = None) -> dict:
    """One ``kmemtrace record --all-objects`` around the workload: this checkout's, or the
    one in ``source`` (another checkout, e.g. ``git archive main``), for a side-by-side."""
    out = tmp / "trace"
    rec = subprocess.Popen([sys.executable, "-m", "kmemtrace", "record", "-o", str(out),
                            "--all-objects", "--force"], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "COLUMNS": "300"}, preexec_fn=sigint_default,
                           cwd=source)
    try:
        wait_line(rec.stderr, "recording to")
        progs0, cpu0 = programs_of(rec.pid), thread_cpu(rec.pid)
        rate = wl.run()
        progs, cpu = programs_of(rec.pid), thread_cpu(rec.pid)
    finally:
        rec.send_signal(signal.SIGINT)
        rec.communicate(timeout=600)
    runs = {k: tuple(a - b for a, b in zip(v, progs0.get(k, (0, 0)), strict=True))
            for k, v in progs.items()}
    events = trace_facts(out, wl.pids, wl.wall)["events"]  # ALLOC and FREE rows
    res = {"rate": rate, "events_per_s": events / wl.wall,
           "bpf_ns": sum(ns for _, ns in runs.values()) / max(1, events), "events": events}
    for name, secs in cpu.items():
        res[f"user_ns[{name}]"] = (secs - cpu0.get(name, 0.0)) * 1e9 / max(1, events)
    res["progs"] = {k: (c, round(ns / max(1, c), 1)) for k, (c, ns) in runs.items() if c}
    return res


def traced(bpf, fn_name: str, wl: Workload) -> dict:
    fn = bpf.load_func(fn_name, bpf.RAW_TRACEPOINT)
    for ev in KMEM_EVENTS:
        bpf.attach_raw_tracepoint(tp=ev, fn_name=fn_name)
    cnt0, ns0 = prog_stats(fn.fd)
    try:
        rate = wl.run()
    finally:
        for ev in KMEM_EVENTS:
            bpf.detach_raw_tracepoint(ev)
    cnt, ns = (a - b for a, b in zip(prog_stats(fn.fd), (cnt0, ns0), strict=True))
    return {"rate": rate, "events_per_s": cnt / wl.wall, "bpf_ns": ns / max(1, cnt),
            "events": cnt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mode", default="eventfd", choices=["mix", "eventfd"])
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the kmemtrace of the checkout in DIR (variant 'baseline')")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("probe_floor: run as root")
    headers.apply(headers.choose_headers())
    bcc = bccload.load_bcc()
    bpf = bcc.BPF(src_file=str(FLOOR_C))
    stats_before = STATS.read_text()
    names = ["untraced", "floor_empty", "floor_ring", "kmemtrace"]
    if args.baseline:
        names.append("baseline")
    results: dict[str, list[dict]] = {n: [] for n in names}
    cpus = len(os.sched_getaffinity(0))
    print(f"load before: {load()}  cpus: {cpus}  mode: {args.mode}", flush=True)
    try:
        STATS.write_text("1")
        with tempfile.TemporaryDirectory(prefix="kmt-floor-", dir="/var/tmp") as tmpdir:
            exe = build_workload(Path(tmpdir))
            for rep in range(args.reps):
                for name in names:
                    wl = Workload(exe, args.seconds, f"floor-{name}-{rep}", args.mode)
                    try:
                        if name == "untraced":
                            res = {"rate": wl.run()}
                        elif name == "kmemtrace":
                            res = with_kmemtrace(wl, Path(tmpdir))
                        elif name == "baseline":
                            res = with_kmemtrace(wl, Path(tmpdir), args.baseline.resolve())
                        else:
                            res = traced(bpf, name, wl)
                    except BaseException:
                        wl.abort()
                        raise
                    res["load"] = load()
                    results[name].append(res)
                    print(f"rep {rep} {name:12} "
                          + "  ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in res.items()), flush=True)
    finally:
        STATS.write_text(stats_before)
        bpf.cleanup()
    base = statistics.median(r["rate"] for r in results["untraced"])
    print(f"\n{cpus} pinned copies x {args.seconds:.0f} s of slab_hammer {args.mode}, "
          f"{args.reps} interleaved reps, medians; load at end {load()}")
    print(f"{'variant':12} {'it/s':>11} {'slowdown':>9} {'events/s':>11} {'BPF ns/ev':>10} "
          f"{'added CPU-ns/ev':>16}")
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        line = f"{name:12} {rate:11,.0f} {base / rate:8.2f}x"
        if name != "untraced":
            evs = statistics.median(r["events_per_s"] for r in runs)
            per_it = evs / rate
            added = cpus * (1 / rate - 1 / base) / per_it * 1e9
            line += (f" {evs:11,.0f} {statistics.median(r['bpf_ns'] for r in runs):10.0f} "
                     f"{added:16.0f}")
        print(line)


if __name__ == "__main__":
    main()
