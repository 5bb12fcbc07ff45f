"""The floor under any BPF recorder of the slab tracepoints, on this kernel and machine.

Run as root:  .venv/bin/python benchmarks/probe_floor.py [--seconds 10] [--reps 3] [--mode eventfd]
                [--baseline DIR] [--only floor_drain,kmemtrace,...]

The slab-hammer workload (one pinned copy per CPU, in a fresh memcg) runs untraced, then
with ``bpf/floor.bpf.c`` attached as raw tracepoints to the four kmem tracepoints kmemtrace
uses, then under kmemtrace, variants interleaved per rep:

* ``floor_empty``: returns at once (the tracepoint, BPF dispatch and recursion guard);
* ``floor_ring``: one 40-byte ring-buffer record per event, never read (the ring is full
  after a fraction of a second, so most reservations are refused: a cheap path);
* ``floor_batch``: kmemtrace's transport alone (a whole 40-byte event per event into a
  per-CPU staging buffer, one ring output per 64), never read: full and refusing too;
* ``floor_drain``: ``floor_batch`` with a consumer thread (nice -10, like the recorder) that
  takes every committed batch off the ring every 20 ms as kmemtrace's drain loop does
  (``MmapRing.drain_with``) and discards it: the least a recorder that delivers every event
  to user space can cost here;
* ``kmt_nodecode`` and ``kmt_discard``: kmemtrace's whole BPF side and drain loop with no
  writer (``benchmarks/record_discard.py``), without and with decoding into columns;
* ``kmemtrace``: ``kmemtrace record --all-objects`` (and ``baseline``: the same from the
  checkout in DIR, e.g. ``git archive`` of main).

With ``kernel.bpf_stats_enabled`` on during the traced runs, each program's run count (=
events) and run time come from its fdinfo, and the consumers' CPU per thread from ``/proc``
(``floor_drain``: the thread's own clock). Printed: iterations/s, slowdown, events/s, BPF
ns per event, the consumer's CPU-ns per event, and the added cost per event seen by the
workload (CPU-ns: both CPUs' time over the events), medians of interleaved reps, with the
load. Wall-clock ratios mean little while other processes share the CPUs; the workload's
own CPU per iteration (BPF included, from ``wait4``) and the consumer's hardly move with
the load, so their sum over the untraced CPU per iteration ("CPU slowdown") is printed too.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
from kmemtrace.record.events import BATCH_DTYPE, EVENT_DTYPE
from kmemtrace.record.recorder import (
    DRAIN_INTERVAL_S,
    RECORDER_NICE,
    RING_PAGES,
    SINGLES_PAGES,
)
from kmemtrace.record.ring import MmapRing
from kmemtrace.record.runtime import name_thread

REPO = Path(__file__).resolve().parents[1]
FLOOR_C = REPO / "bpf" / "floor.bpf.c"
DISCARD_PY = Path(__file__).with_name("record_discard.py")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
FLOORS = ("floor_empty", "floor_ring", "floor_batch", "floor_drain")
KMT_VARIANTS = {"kmt_nodecode": ["--no-decode"], "kmt_discard": []}


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


def with_kmemtrace(wl: Workload, tmp: Path, source: Path | None = None,
                   discard: list[str] | None = None) -> dict:
    """One ``kmemtrace record --all-objects`` around the workload: this checkout's, or the
    one in ``source`` (another checkout, e.g. ``git archive main``), for a side-by-side.
    ``discard``: instead, ``record_discard.py`` with these options (no trace; the events
    are the ones its drain loop took off the ring, all processes')."""
    out = tmp / "trace"
    if discard is None:
        argv = ["-m", "kmemtrace", "record", "-o", str(out), "--all-objects", "--force"]
        ready = "recording to"
    else:
        argv, ready = [str(DISCARD_PY), *discard], "discarding"
    rec = subprocess.Popen([sys.executable, *argv], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "COLUMNS": "300"}, preexec_fn=sigint_default,
                           cwd=source)
    try:
        wait_line(rec.stderr, ready)
        progs0, cpu0 = programs_of(rec.pid), thread_cpu(rec.pid)
        drained0 = drained(rec) if discard is not None else 0
        rate = wl.run()
        progs, cpu = programs_of(rec.pid), thread_cpu(rec.pid)
        drained1 = drained(rec) if discard is not None else 0
    finally:
        rec.send_signal(signal.SIGINT)
        _, err = rec.communicate(timeout=600)
    runs = {k: tuple(a - b for a, b in zip(v, progs0.get(k, (0, 0)), strict=True))
            for k, v in progs.items()}
    if discard is None:
        events = trace_facts(out, wl.pids, wl.wall)["events"]  # ALLOC and FREE rows
    else:
        events = drained1 - drained0  # every process's events, as the floor programs count
    res = {"rate": rate, "events_per_s": events / wl.wall,
           "bpf_ns": sum(ns for _, ns in runs.values()) / max(1, events), "events": events}
    if discard is not None:
        res["lost"] = int(err.split(" lost ", 1)[1].split()[0])
    for name, secs in cpu.items():
        res[f"user_ns[{name}]"] = (secs - cpu0.get(name, 0.0)) * 1e9 / max(1, events)
    res["progs"] = {k: (c, round(ns / max(1, c), 1)) for k, (c, ns) in runs.items() if c}
    return res


def drained(rec: subprocess.Popen) -> int:
    """Events ``record_discard.py`` has taken off the ring so far (it answers SIGUSR1)."""
    rec.send_signal(signal.SIGUSR1)
    for line in rec.stderr:
        if line.startswith("events "):
            return int(line.split()[1])
    raise RuntimeError("record_discard.py exited")


class Drainer:
    """The consumer of ``floor_drain``: a thread that takes every committed batch (and
    single) off the floor's rings every DRAIN_INTERVAL_S, as kmemtrace's drain loop does,
    at the recorder's nice level, and discards them after counting their events."""

    def __init__(self, rings: list[MmapRing]):
        self.rings = rings
        self.events = 0
        self.cpu_ns = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="floor-drain")
        self._thread.start()

    def _run(self) -> None:
        name_thread("floor-drain")
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RECORDER_NICE)
        t0 = time.thread_time_ns()
        while not self._stop:
            self._poll()
            time.sleep(DRAIN_INTERVAL_S)
        self._poll()
        self.cpu_ns = time.thread_time_ns() - t0

    def _poll(self) -> None:
        self.events += self.rings[0].drain_with(lambda b: int(b["count"].sum())) or 0
        self.events += self.rings[1].drain_with(len) or 0

    def stop(self) -> None:
        self._stop = True
        self._thread.join()


def floor_rings(bpf) -> list[MmapRing]:
    page = os.sysconf("SC_PAGESIZE")
    return [MmapRing(bpf["floor_batches"].map_fd, RING_PAGES * page, BATCH_DTYPE),
            MmapRing(bpf["floor_singles"].map_fd, SINGLES_PAGES * page, EVENT_DTYPE)]


def traced(bpf, name: str, wl: Workload, rings: list[MmapRing]) -> dict:
    """One floor program around the workload; ``floor_drain`` runs ``floor_batch`` with a
    Drainer. The batch rings start each run empty (what a run before left is dropped)."""
    fn_name = "floor_batch" if name == "floor_drain" else name
    fn = bpf.load_func(fn_name, bpf.RAW_TRACEPOINT)
    counts = bpf["floor_counts"]
    for ring in rings:
        ring.drain_with(len)
    refused0, singles0 = (sum(counts.getvalue(counts.Key(i))) for i in (0, 1))
    for ev in KMEM_EVENTS:
        bpf.attach_raw_tracepoint(tp=ev, fn_name=fn_name)
    cnt0, ns0 = prog_stats(fn.fd)
    drainer = Drainer(rings) if name == "floor_drain" else None
    try:
        rate = wl.run()
        cnt, ns = (a - b for a, b in zip(prog_stats(fn.fd), (cnt0, ns0), strict=True))
    finally:
        for ev in KMEM_EVENTS:
            bpf.detach_raw_tracepoint(ev)
        if drainer is not None:
            drainer.stop()
    res = {"rate": rate, "events_per_s": cnt / wl.wall, "bpf_ns": ns / max(1, cnt),
           "events": cnt}
    if fn_name == "floor_batch":
        res["refused"] = sum(counts.getvalue(counts.Key(0))) - refused0
        res["singles"] = sum(counts.getvalue(counts.Key(1))) - singles0
    if drainer is not None:
        # drained from attach to detach: a little more than the window's run count
        res["delivered"] = drainer.events
        res["user_ns[floor-drain]"] = drainer.cpu_ns / max(1, drainer.events)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mode", default="eventfd", choices=["mix", "eventfd"])
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the kmemtrace of the checkout in DIR (variant 'baseline')")
    ap.add_argument("--only", help="comma-separated variants to run besides 'untraced'")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("probe_floor: run as root")
    headers.apply(headers.choose_headers())
    bcc = bccload.load_bcc()
    bpf = bcc.BPF(src_file=str(FLOOR_C), cflags=[f"-I{REPO / 'bpf'}"])
    rings = floor_rings(bpf)
    stats_before = STATS.read_text()
    names = ["untraced", *FLOORS, *KMT_VARIANTS, "kmemtrace"]
    if args.baseline:
        names.append("baseline")
    if args.only:
        wanted = set(args.only.split(","))
        if unknown := wanted - set(names):
            sys.exit(f"probe_floor: unknown variants {', '.join(sorted(unknown))}")
        names = [n for n in names if n == "untraced" or n in wanted]
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
                        elif name in KMT_VARIANTS:
                            res = with_kmemtrace(wl, Path(tmpdir), discard=KMT_VARIANTS[name])
                        else:
                            res = traced(bpf, name, wl, rings)
                    except BaseException:
                        wl.abort()
                        raise
                    res["wl_us_per_it"] = wl.cpu_per_iter * 1e6
                    if name != "untraced":
                        user_ns = sum(v for k, v in res.items() if k.startswith("user_ns["))
                        res["rec_us_per_it"] = user_ns * 1e-3 * res["events"] / (
                            res["rate"] * wl.wall)
                    res["load"] = load()
                    results[name].append(res)
                    print(f"rep {rep} {name:12} "
                          + "  ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in res.items()), flush=True)
    finally:
        STATS.write_text(stats_before)
        for ring in rings:
            ring.close()
        bpf.cleanup()
    base = statistics.median(r["rate"] for r in results["untraced"])
    print(f"\n{cpus} pinned copies x {args.seconds:.0f} s of slab_hammer {args.mode}, "
          f"{args.reps} interleaved reps, medians; load at end {load()}")
    base_cpu = statistics.median(r["wl_us_per_it"] for r in results["untraced"])
    print(f"{'variant':12} {'it/s':>11} {'slowdown':>9} {'events/s':>11} {'BPF ns/ev':>10} "
          f"{'user CPU-ns/ev':>15} {'added CPU-ns/ev':>16} {'wl CPU-us/it':>13} "
          f"{'rec CPU-us/it':>14} {'CPU slowdown':>13}")
    for name, runs in results.items():
        rate = statistics.median(r["rate"] for r in runs)
        wl_cpu = statistics.median(r["wl_us_per_it"] for r in runs)
        line = f"{name:12} {rate:11,.0f} {base / rate:8.2f}x"
        if name == "untraced":
            line += f"{'':71}{wl_cpu:13.2f}"
        else:
            evs = statistics.median(r["events_per_s"] for r in runs)
            per_it = evs / rate
            added = cpus * (1 / rate - 1 / base) / per_it * 1e9
            user = statistics.median(sum(v for k, v in r.items() if k.startswith("user_ns["))
                                     for r in runs)
            rec_cpu = statistics.median(r["rec_us_per_it"] for r in runs)
            line += (f" {evs:11,.0f} {statistics.median(r['bpf_ns'] for r in runs):10.0f} "
                     f"{user:15.0f} {added:16.0f} {wl_cpu:13.2f} {rec_cpu:14.2f} "
                     f"{(wl_cpu + rec_cpu) / base_cpu:12.2f}x")
        print(line)
    print("CPU slowdown: (workload + consumer CPU per iteration) / untraced workload CPU per "
          "iteration; what the wall-clock slowdown would be if the workload kept both CPUs "
          "busy and every CPU-second of the consumer were taken from it (load-robust)")


if __name__ == "__main__":
    main()
