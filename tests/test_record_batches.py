"""Per-CPU batches (bpf/kmemtrace.bpf.c, "Per-CPU batches"): the slab ring's records are
whole batches, user space takes the events in use, and no event stays staged on a CPU
that went quiet. The root test runs the real recorder on the real kernel and fails, never
skips, when it cannot."""

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from kmemtrace.errors import KernelSupportError
from kmemtrace.record.events import BATCH_DTYPE, K
from kmemtrace.record.ring import CpuFlusher, online_cpus, unbatch
from kmemtrace.trace.schema import EventKind

MEMCG = Path("/sys/fs/cgroup/memory")


def test_unbatch_takes_the_events_in_use_in_order():
    batches = np.zeros(3, BATCH_DTYPE)
    batches["count"] = [3, 0, K["KMT_BATCH"]]
    batches["ev"]["ptr"] = np.arange(3 * K["KMT_BATCH"]).reshape(3, -1) + 1000
    out = unbatch(batches)
    n = K["KMT_BATCH"]
    expect = [1000, 1001, 1002, *range(1000 + 2 * n, 1000 + 3 * n)]
    assert out["ptr"].tolist() == expect
    assert unbatch(batches[:0]).dtype == batches.dtype["ev"].base
    assert len(unbatch(batches[:0])) == 0


def test_online_cpus_reads_the_kernel_range_list(tmp_path):
    f = tmp_path / "online"
    f.write_text("0-2,5,7-8\n")
    assert online_cpus(f) == [0, 1, 2, 5, 7, 8]


def test_flush_of_a_program_that_is_not_one_is_a_one_line_error(tmp_path):
    with (open(tmp_path / "x", "w") as fh,  # an fd, but not a BPF program's
          pytest.raises(KernelSupportError, match="cannot run the batch flush on CPU 0")):
        CpuFlusher(fh.fileno(), cpus=[0]).flush()


@pytest.mark.root
def test_a_quiet_cpu_hands_over_its_staged_events_before_stop():
    """A child in a fresh memcg, pinned to the last CPU, allocates (fewer events than a few
    batches, so a partial batch is left staged) and then sleeps. With the recorder filtering
    to that memcg nothing else fills or ages out that batch: only the periodic flush of
    idle CPUs can hand it over. Its rows must all arrive while it sleeps, and stop() must
    add none of them."""
    from kmemtrace.record.recorder import Recorder, RecordOptions, prepare

    memcg = MEMCG / f"kmt-i10b-batches-{os.getpid()}"
    memcg.mkdir()
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    child = None
    try:
        opts = RecordOptions(output=None, cgroup=memcg.name)
        feats, note, _ = prepare(opts)
        rec = Recorder(opts, feats, note)
        rec.start()
        rows: list[np.ndarray] = []
        rec.taps.append(lambda cols: rows.append(cols["pid"][
            (cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.FREE)].copy()))
        cpu = os.sched_getaffinity(0)
        last = max(cpu)

        def enter() -> None:
            os.sched_setaffinity(0, {last})
            (memcg / "cgroup.procs").write_text("0")

        child = subprocess.Popen(
            ["/usr/bin/python3", "-c", "import os, sys, time\n"
             "fds = [os.eventfd(0) for _ in range(20)]\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True, preexec_fn=enter)
        assert child.stdout.readline().strip() == "ready"

        def mine() -> int:
            return int(sum((r == child.pid).sum() for r in rows))

        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            rec.poll()
            time.sleep(0.01)
        before_stop = mine()
        rec.stop_requested = True
        rec.stop()
        assert before_stop > 0
        assert mine() == before_stop
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        if child is not None:
            child.kill()
            child.wait()
        memcg.rmdir()
