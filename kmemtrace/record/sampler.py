"""Periodic ``/sys/kernel/slab`` samples, read on a thread of their own.

Why a thread: reading two files per cache for ~700 caches takes ~16 ms per sample on this
VM. Done by the drain loop, that is 16 ms every second in which the rings are not drained
and the batches of quiet CPUs are not flushed. Here the drain loop only takes the finished
samples (:meth:`SlabSampler.take`) and turns them into rows, so rows are still made (and
numbered) by one thread.
"""

import threading
import time

from kmemtrace.record import sysfs
from kmemtrace.record.runtime import name_thread


class SlabSampler:
    """Samples ``caches`` now and then every ``interval_s`` until :meth:`close`."""

    def __init__(self, caches: list[dict], interval_s: float):
        self.caches = caches  # the recorder's list: it may grow, each sample takes a copy
        self.interval_s = interval_s
        self._done: list[tuple[int, list[tuple[int, int, int]]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmt-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        name_thread("kmt-sampler")
        while True:
            ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # the clock of bpf_ktime_get_ns
            samples = sysfs.sample_slabs(list(self.caches))
            with self._lock:
                self._done.append((ts, samples))
            if self._stop.wait(self.interval_s):
                return

    def take(self) -> list[tuple[int, list[tuple[int, int, int]]]]:
        """The samples finished since the last call: (CLOCK_MONOTONIC ns, [(cache id, slabs,
        objects)])."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
