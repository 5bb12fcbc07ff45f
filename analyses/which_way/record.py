"""Real recordings on this machine: single-memcg runs and a container-churn run.

``kmemtrace record --in-memcg`` gives one memcg and one offline per trace. The RFC is about
container churn, so the churn run records a study-parent memcg with ``--cgroup`` while a
driver creates child memcgs one after another, runs a short workload in each (leaving
survivors, see :mod:`analyses.which_way.work`) and removes it. The driver also times each
rmdir, today's counterpart of bugzilla 190841's cycle times.
"""

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
REPO = Path(__file__).resolve().parents[2]
KMEMTRACE = [sys.executable, "-m", "kmemtrace"]
WORK = [sys.executable, "-m", "analyses.which_way.work"]
START_TIMEOUT_S = 60.0
NR_MEMBARRIER = 324  # x86-64
MEMBARRIER_CMD_GLOBAL = 1  # = synchronize_rcu() in the kernel


@dataclass
class Recorded:
    """One recorded trace and what the driver measured around it."""

    group: str
    run: int
    path: Path
    rmdir_s: list[float] = field(default_factory=list)


def can_record() -> bool:
    return os.geteuid() == 0 and (MEMCG_ROOT / "cgroup.procs").exists()


def _log(msg: str) -> None:
    print(f"which_way: {msg}", file=sys.stderr, flush=True)


def record_in_memcg(out: Path, kind: str, seconds: float, keep: int, run: int) -> Recorded:
    """``kmemtrace record --in-memcg`` around one workload; survivors freed in the grace."""
    release = 1.0
    cmd = [*KMEMTRACE, "record", "-o", str(out), "--in-memcg", "--grace", f"{release + 2}s",
           "--", *WORK, kind, "--seconds", str(seconds), "--keep", str(keep),
           "--release-after", str(release)]
    _log(f"recording {kind} run {run} -> {out}")
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return Recorded(kind, run, out)


def _enter(memcg: Path):
    procs = str(memcg / "cgroup.procs")

    def enter() -> None:  # in the child, before exec
        with open(procs, "w") as fh:
            fh.write("0")
    return enter


def _rmdir(path: Path, timeout_s: float = 5.0) -> float:
    """rmdir (this offlines the memcg) and return how long the call itself took."""
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


def record_churn(out: Path, n_containers: int, seconds: float, keep: int, run: int,
                 rng: np.random.Generator) -> Recorded:
    """Record a study-parent memcg while containers come and go under it."""
    parent = MEMCG_ROOT / f"kmt-whichway-{os.getpid()}-{secrets.token_hex(2)}"
    parent.mkdir()
    rec = subprocess.Popen([*KMEMTRACE, "record", "-o", str(out), "--cgroup", "/" + parent.name],
                           cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = Recorded("churn", run, out)
    _log(f"recording churn run {run} ({n_containers} containers) -> {out}")
    try:
        _wait_started(out, rec)
        longest = 0.0
        for i in range(n_containers):
            child = parent / f"c{i}"
            child.mkdir()
            release = float(rng.uniform(0.2, 4.0))
            longest = max(longest, release)
            kind = ("mixed", "files", "sockets")[i % 3]
            subprocess.run([*WORK, kind, "--seconds", str(seconds), "--keep", str(keep),
                            "--release-after", f"{release:.2f}"],
                           cwd=REPO, preexec_fn=_enter(child), check=True)
            result.rmdir_s.append(_rmdir(child))
        time.sleep(longest + 1.0)  # every keeper has released its survivors
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
        _rmdir(parent)
    return result


def _wait_started(out: Path, rec: subprocess.Popen) -> None:
    """The recorder writes meta.json only after every probe is attached."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (out / "meta.json").exists():
        if rec.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"kmemtrace record did not start (exit {rec.returncode})")
        time.sleep(0.05)
    time.sleep(0.2)


def grace_period_s(n: int = 50) -> list[float]:
    """Wall time of ``membarrier(MEMBARRIER_CMD_GLOBAL)``: one synchronize_rcu() each.

    The replay counts grace periods; this turns a count into seconds on this machine
    (the bugzilla 190841 check). Empty when the syscall is refused.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if libc.syscall(NR_MEMBARRIER, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
            return []
        times.append(time.perf_counter() - t0)
    return times
