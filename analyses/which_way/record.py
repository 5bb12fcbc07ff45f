"""Whole-system recordings of real workloads, and the kernel's own counts beside them.

Each recording is ``kmemtrace record --all-objects`` of the whole machine (every memcg,
every object: shared caches under objcg hold everyone's objects, and the calibration
compares the model with ``/sys/kernel/slab``, which counts every object), with memory
pressure recorded as PRESSURE rows. The workload families live in
:mod:`analyses.which_way.jobs`; their memcgs are named ``kmt-ww-*`` so that the report can
tell them from the rest of the machine.

Beside the trace, a sampler writes ``<trace>.dying.csv``: the v1 hierarchy has no
``nr_dying_descendants``, so the dying-memcg count is ``num_cgroups`` of the memory line in
``/proc/cgroups`` (which counts every memcg not yet freed, dying ones included) minus the
memcg directories one can list (the online ones).
"""

import csv
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
PREFIX = "kmt-ww"
REPO = Path(__file__).resolve().parents[2]
KMEMTRACE = [sys.executable, "-m", "kmemtrace"]
START_TIMEOUT_S = 120.0
TRUTH_PERIOD_S = 1.0


@dataclass
class Recorded:
    """One recorded trace, its workload family, and what the driver measured around it."""

    group: str
    run: int
    path: Path
    variant: str = ""
    rmdir_s: list[float] = field(default_factory=list)
    load: str = ""  # /proc/loadavg at the end of the recording


def truth_path(trace: Path) -> Path:
    return trace.with_name(trace.name + ".dying.csv")


def can_record() -> bool:
    return os.geteuid() == 0 and (MEMCG_ROOT / "cgroup.procs").exists()


def log(msg: str) -> None:
    print(f"which_way: {msg}", file=sys.stderr, flush=True)


def memcg_counts() -> tuple[int, int]:
    """(memcgs the kernel still has, memcg directories online) on the v1 hierarchy."""
    with open("/proc/cgroups") as fh:
        total = next(int(line.split()[2]) for line in fh if line.startswith("memory\t"))
    online = sum(len(dirs) for _, dirs, _ in os.walk(MEMCG_ROOT)) + 1  # + the root
    return total, online


class _Sampler(threading.Thread):
    """Dying memcgs over time (CLOCK_MONOTONIC, as the trace), into ``<trace>.dying.csv``."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.stop = path, threading.Event()

    def run(self) -> None:
        with open(self.path, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["ts_ns", "memcgs", "online", "dying"])
            while True:
                total, online = memcg_counts()
                out.writerow([time.monotonic_ns(), total, online, total - online])
                if self.stop.wait(TRUTH_PERIOD_S):
                    break


class Recording:
    """``with Recording(out):`` records the whole system while the block runs.

    With ``lock`` (a file), the recording holds an exclusive ``flock`` on it from start to
    stop, so that recordings and benchmarks of other users of a shared machine that take
    the same lock never overlap with it; it is released between recordings.
    """

    lock: Path | None = None  # set once by the study's command line (--lock)

    def __init__(self, out: Path):
        self.out = out
        self.proc: subprocess.Popen | None = None
        self.sampler = _Sampler(truth_path(out))
        self._lock_fd: int | None = None

    def __enter__(self) -> "Recording":
        if self.lock is not None:
            self._lock_fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.proc = subprocess.Popen(
            # shrunk at start: the first sample then counts live objects, and the model
            # starts from the kernel's state rather than from bounds on what the CPUs held
            [*KMEMTRACE, "record", "-o", str(self.out), "--all-objects", "--force",
             "--shrink-at-start"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self.out / "meta.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kmemtrace record did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)
        self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sampler.stop.set()
        self.sampler.join()
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=120)
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        if self.proc.returncode:
            raise RuntimeError(f"kmemtrace record failed: {err.strip()}")


def rmdir(path: Path, timeout_s: float = 10.0) -> float:
    """rmdir (this offlines the memcg); the call's own duration. Retries while tasks exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        t0 = time.perf_counter()
        try:
            path.rmdir()
            return time.perf_counter() - t0
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def enter(memcg: Path):
    """preexec_fn: the child joins ``memcg`` before exec (so the job is charged there)."""
    procs = str(memcg / "cgroup.procs")

    def join() -> None:
        with open(procs, "w") as fh:
            fh.write("0")
    return join


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
