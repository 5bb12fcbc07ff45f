"""What recording page-cache insertions and removals costs, and whether every page is seen.

Run as root:  .venv/bin/python benchmarks/page_cache_overhead.py [--reps 3] [--files 2000]

The workload lives in the page cache, the worst case for the page-cache probes: in a fresh
memcg, ``--files`` files of 16 KiB on ext4 are evicted (``POSIX_FADV_DONTNEED``) and read
back, pass after pass for ``--seconds``: every read inserts folios, every eviction removes
them. Variants interleaved per rep on this shared machine: untraced, ``kmemtrace record
--no-page-cache``, ``kmemtrace record`` (page cache on). The figure is the workload's pass
rate; the cost of the page-cache probes is the ratio of the last two. The load average is
printed with each.

The cost per event, less noisy than rates on a shared machine: with
``kernel.bpf_stats_enabled`` on, the kernel's own run count and run time of the two
page-cache programs (``kmt_pc_add``, ``kmt_pc_delete``, found by name through
``BPF_OBJ_GET_INFO_BY_FD`` on the recorder's descriptors), printed as ns per run and as a
share of the run's wall time.

The independent count: the workload knows how many pages it put into the cache (files x
pages per file, once written and once per pass read back); the trace's PAGE_CACHE
insertions of its memcg must add up to that (plus the few ext4 metadata blocks it read),
less what LOST PAGE_CACHE reports.
"""

import argparse
import ctypes
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from probe_floor import bpf_prog_fdinfo  # noqa: E402

from kmemtrace.trace.reader import open_trace  # noqa: E402
from kmemtrace.trace.schema import EventKind  # noqa: E402

MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
PC_PROGS = ("kmt_pc_add", "kmt_pc_delete")
SYS_BPF, SYS_PIDFD_GETFD, BPF_OBJ_GET_INFO_BY_FD = 321, 438, 15  # x86_64
PROG_INFO_NAME = 64  # offsetof(struct bpf_prog_info, name), char[16]


def _prog_name(libc, fd: int) -> str:
    info = ctypes.create_string_buffer(256)
    attr = struct.pack("IIQ", fd, len(info), ctypes.addressof(info)) + bytes(104)
    buf = ctypes.create_string_buffer(attr, len(attr))
    if libc.syscall(SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, buf, len(attr)) != 0:
        return "?"
    return info.raw[PROG_INFO_NAME:PROG_INFO_NAME + 16].split(b"\0")[0].decode()


def pc_prog_stats(pid: int) -> dict[str, tuple[int, int]]:
    """kmt_pc_add/_delete of process ``pid``: name -> (run_cnt, run_time_ns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    out = {}
    try:
        for fd, fields in bpf_prog_fdinfo(pid):
            mine = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
            if mine < 0:
                continue
            try:
                name = _prog_name(libc, mine)
            finally:
                os.close(mine)
            if name in PC_PROGS:
                out[name] = (int(fields.get("run_cnt", 0)), int(fields.get("run_time_ns", 0)))
    finally:
        os.close(pidfd)
    return out
FILE_BYTES = 16384
WORKLOAD = """
import os, sys, time
d, n, seconds, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
names = [os.path.join(d, f"f{i}") for i in range(n)]
block = os.urandom(size)
for name in names:
    with open(name, "wb") as fh:
        fh.write(block)
os.sync()
passes, end = 0, time.monotonic() + seconds
t0 = time.monotonic()
while time.monotonic() < end:
    for name in names:
        fd = os.open(name, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.read(fd, size)
        os.close(fd)
    passes += 1
print(passes, time.monotonic() - t0)
"""


def run_workload(memcg: Path, where: Path, files: int, seconds: float) -> tuple[int, float]:
    def enter() -> None:
        (memcg / "cgroup.procs").write_text("0")

    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(where), str(files),
                          str(seconds), str(FILE_BYTES)], preexec_fn=enter, check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1])


def one(variant: str, files: int, seconds: float, work: Path, rep: int) -> dict:
    memcg = MEMCG_ROOT / f"i12c-pcbench-{os.getpid()}-{variant}-{rep}"
    where = work / f"{variant}-{rep}"
    where.mkdir()
    trace = work / f"trace-{variant}-{rep}"
    rec = None
    if variant != "untraced":
        args = [sys.executable, "-m", "kmemtrace", "record", "-o", str(trace)]
        if variant == "no-page-cache":
            args.append("--no-page-cache")
        rec = subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True)
        while "recording to" not in rec.stderr.readline():
            if rec.poll() is not None:
                raise SystemExit(f"record failed: {rec.stderr.read()}")
    memcg.mkdir()
    before = pc_prog_stats(rec.pid) if variant == "page-cache" else {}
    try:
        passes, secs = run_workload(memcg, where, files, seconds)
        memcg_id = memcg.stat().st_ino
        after = pc_prog_stats(rec.pid) if variant == "page-cache" else {}
    finally:
        if rec is not None:
            rec.send_signal(2)
            rec.communicate(timeout=300)
        memcg.rmdir()
    row = {"variant": variant, "passes_per_s": passes / secs, "passes": passes,
           "load": os.getloadavg()[0]}
    if variant == "page-cache":
        for name in PC_PROGS:
            cnt = after.get(name, (0, 0))[0] - before.get(name, (0, 0))[0]
            ns = after.get(name, (0, 0))[1] - before.get(name, (0, 0))[1]
            row[f"{name}_runs"], row[f"{name}_ns"] = cnt, ns / max(cnt, 1)
            row[f"{name}_cpu_pct"] = ns / (secs * 1e9) * 100
        t = open_trace(trace)
        df = t.to_pandas(kinds=[EventKind.PAGE_CACHE])
        mine = df[(df.memcg_id == memcg_id) & (df.aux > 0)]
        row["inserted_pages"] = int(mine.aux.sum())
        # written once, then read back once per pass
        row["expected_pages"] = (passes + 1) * files * (FILE_BYTES // 4096)
        row["lost_page_cache"] = int(t.meta["lost"]["by_reason"].get("PAGE_CACHE", 0))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    rows = []
    stats_was = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        _reps(args, rows)
    finally:
        STATS.write_text(stats_was)
    med = {v: statistics.median(r["passes_per_s"] for r in rows if r["variant"] == v)
           for v in ("untraced", "no-page-cache", "page-cache")}
    print(f"median passes/s: untraced {med['untraced']:.2f}, record --no-page-cache "
          f"{med['no-page-cache']:.2f}, record {med['page-cache']:.2f}")
    print(f"slowdown of the page-cache probes (no-page-cache / page-cache): "
          f"x{med['no-page-cache'] / med['page-cache']:.3f}; of the whole recorder "
          f"(untraced / page-cache): x{med['untraced'] / med['page-cache']:.3f}")
    pc = [r for r in rows if r["variant"] == "page-cache"]
    for name in PC_PROGS:
        print(f"{name}: median {statistics.median(r[name + '_ns'] for r in pc):.0f} ns per run, "
              f"{statistics.median(r[name + '_runs'] for r in pc):,.0f} runs per rep, "
              f"{statistics.median(r[name + '_cpu_pct'] for r in pc):.2f} % of one CPU")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _reps(args, rows: list[dict]) -> None:
    """Interleaved variants per rep (untraced, --no-page-cache, page cache)."""
    with tempfile.TemporaryDirectory(prefix="i12c-pcbench-", dir=args.work) as tmp:
        for rep in range(args.reps):
            for variant in ("untraced", "no-page-cache", "page-cache"):
                row = one(variant, args.files, args.seconds, Path(tmp), rep)
                rows.append(row)
                print(f"rep {rep} {variant}: {row['passes_per_s']:.2f} passes/s "
                      f"(load {row['load']:.1f})"
                      + (f"; pages inserted {row['inserted_pages']:,} of "
                         f"{row['expected_pages']:,} put in the cache, LOST PAGE_CACHE "
                         f"{row['lost_page_cache']}; kmt_pc_add {row['kmt_pc_add_ns']:.0f} ns"
                         f", kmt_pc_delete {row['kmt_pc_delete_ns']:.0f} ns per run"
                         if "inserted_pages" in row else ""), flush=True)


if __name__ == "__main__":
    main()
