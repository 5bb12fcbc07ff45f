"""Periodic ``/sys/kernel/slab`` samples, read on a thread of their own.

Why a thread: reading two files per cache for ~240 real caches takes 12-20 ms per sample
on this VM (benchmarks/sampler_cost.py). Done by the drain loop, that is that long every
second in which the rings are not drained and the batches of quiet CPUs are not flushed.
Here the drain loop only takes the finished samples (:meth:`SlabSampler.take`) and turns
them into rows, so rows are still made (and numbered) by one thread.

Each row carries the stamp of its own cache's reads (:func:`sysfs.sample_slab_rows`). What
the CPUs hold (``cpu_slabs``, ``partial``, ``objects_partial``) is read in the first round
and every :data:`CPU_FIELDS_EVERY`-th after it: a round with the five files costs 2.2-2.4
times one with the two (``objects_partial`` walks every node-partial list under its lock),
1.27 times on average at this rate, and the replay needs them exactly at the start (the
model's starting slabs) and as a check now and then.
"""

import threading

from kmemtrace.record import sysfs
from kmemtrace.record.runtime import name_thread

CPU_FIELDS_EVERY = 5  # rounds; round 0 always has them


class SlabSampler:
    """Samples ``caches`` now and then every ``interval_s`` until :meth:`close`."""

    def __init__(self, caches: list[dict], interval_s: float, shrink_first: bool = False):
        self.caches = caches  # the recorder's list: it may grow, each sample takes a copy
        self.interval_s = interval_s
        self._done: list[list[tuple[int, ...]]] = []
        # the slabs on each CPU's partial list at the first round, by cache id
        self.start_split: dict[int, list[int]] = {}
        # with shrink_first: the ids of the caches shrunk right before their first reads
        self.shrunk: list[int] | None = [] if shrink_first else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kmt-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        name_thread("kmt-sampler")
        rounds = 0
        while True:
            first = rounds == 0
            rows = sysfs.sample_slab_rows(list(self.caches), rounds % CPU_FIELDS_EVERY == 0,
                                          split=self.start_split if first else None,
                                          shrunk=self.shrunk if first else None)
            rounds += 1
            with self._lock:
                self._done.append(rows)
            if self._stop.wait(self.interval_s):
                return

    def take(self) -> list[list[tuple[int, ...]]]:
        """The rounds finished since the last call, each a list of
        :func:`sysfs.sample_slab_rows` rows (``start_split`` and ``shrunk`` are complete
        once the first round has been taken)."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
