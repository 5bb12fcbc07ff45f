"""The writer side of a recording: a thread that owns the TraceWriter, fed by a bounded queue.

Why a thread: sealing a 2 M-row part (sort, Parquet encode, fsync) takes on the order of a
second. Done in the loop that drains the BPF ring, it stopped the draining for that long,
the ring (~0.5 s of events at full rate) overflowed, and every part seal left a blackout in
the trace. Here the drain side only converts records and enqueues them; the heavy work
releases the GIL (numpy sorts, pyarrow encoding, file I/O), so draining keeps its pace.

Why bounded, and why dropping rather than blocking: a writer that falls behind for good
must not eat all memory, and blocking the drain side would only move the loss into the
ring. When the queue is full, slab ALLOC/FREE rows are dropped and counted per CPU as LOST
``WRITER_QUEUE``; rare rows (memcg life cycle, slab samples, LOST) are always queued.

A write failure (full disk, I/O error) turns the writer into a counter: the sealed parts
stay as they are, later rows are counted as ``WRITE_FAILED`` (see ``TraceWriter.abandon``),
and :meth:`WriterThread.close` raises one error line.
"""

import os
import threading
from collections import Counter, deque
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from kmemtrace.errors import KmemtraceError
from kmemtrace.record.runtime import name_thread
from kmemtrace.trace.schema import EventKind, LostReason
from kmemtrace.trace.writer import DEFAULT_ROTATE_ROWS, TraceWriter

MAX_QUEUED_ROWS = 2 * DEFAULT_ROTATE_ROWS  # ~280 MB of columns: two parts' worth
_DROPPABLE = np.array([EventKind.ALLOC, EventKind.FREE], np.uint8)
_FLUSH = object()
_CLOSE = object()


class WriterThread:
    """``put()`` column batches from the drain side; ``close()`` seals the trace."""

    def __init__(self, writer: TraceWriter, max_rows: int = MAX_QUEUED_ROWS):
        self.writer = writer
        self.max_rows = max_rows
        self.queued_rows = 0
        self.dropped: Counter[int] = Counter()  # cpu -> rows dropped for a full queue
        self.error: BaseException | None = None
        self._queue: deque = deque()
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="kmemtrace-writer", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def meta(self) -> dict:
        return self.writer.meta

    def put(self, cols: dict[str, np.ndarray], release: Callable[[], None] | None = None) -> None:
        """Queue one batch; over the bound, its ALLOC/FREE rows are dropped and counted.
        ``release`` is called once the batch's arrays are no longer needed (copied by the
        writer, or dropped), so that the caller can fill them again."""
        n = len(cols["ts_ns"])
        with self._cv:
            if self.queued_rows + n > self.max_rows:
                drop = np.isin(cols["kind"], _DROPPABLE)
                cpus, counts = np.unique(cols["cpu"][drop], return_counts=True)
                self.dropped.update(dict(zip(cpus.tolist(), counts.tolist(), strict=True)))
                cols = {name: c[~drop] for name, c in cols.items()}  # copies
                if release is not None:
                    release()
                    release = None
                n = len(cols["ts_ns"])
                if n == 0:
                    return
            self._queue.append((cols, release))
            self.queued_rows += n
            self._cv.notify()

    def flush(self) -> None:
        """Ask the writer to seal what it holds (all but the reorder window)."""
        with self._cv:
            self._queue.append(_FLUSH)
            self._cv.notify()

    def lost_rows(self) -> dict[tuple[int, int], int]:
        """(cpu, LostReason.WRITER_QUEUE) -> rows dropped, for the recorder's LOST rows."""
        with self._cv:
            return {(cpu, int(LostReason.WRITER_QUEUE)): n for cpu, n in self.dropped.items()}

    def close(self) -> dict:
        """Write everything queued, seal the trace, return its meta; raise if writing failed."""
        with self._cv:
            self._queue.append(_CLOSE)
            self._cv.notify()
        self._thread.join()
        exc = self.error
        if exc is None:
            return self.writer.meta
        if not isinstance(exc, (OSError, pa.ArrowException)):
            raise exc  # a bug, not the disk: keep its traceback
        meta = self.writer.meta
        parts = len(meta["parts"])
        dropped = meta["lost"]["by_reason"].get(LostReason.WRITE_FAILED.name, 0)
        raise KmemtraceError(
            f"cannot write the trace to {self.writer.dir}: {self.writer.error}; "
            f"{dropped:,} events dropped (LOST reason WRITE_FAILED); "
            + (f"the {parts} sealed part{'s stay' if parts != 1 else ' stays'} readable"
               if parts else "no part was sealed")
            + " (meta.json says complete: false)",
            tip="free space on that filesystem, or record to another -o",
        )

    def _run(self) -> None:
        name_thread("kmt-writer")
        while True:
            with self._cv:
                while not self._queue:
                    self._cv.wait()
                item = self._queue.popleft()
            if item is _CLOSE:
                self._guard(self.writer.close)
                return
            if item is _FLUSH:
                self._guard(self.writer.flush)
                continue
            cols, release = item
            self._guard(self.writer.append, cols)  # copies the rows (or counts them lost)
            if release is not None:
                release()
            with self._cv:
                self.queued_rows -= len(cols["ts_ns"])

    def _guard(self, fn, *args) -> None:
        """Run one writer step; the first failure abandons the writer (it then only counts)."""
        try:
            fn(*args)
        except Exception as exc:  # reported by close(), never swallowed
            if self.error is None:
                self.error = exc
                self.writer.abandon(_reason(exc))
                if fn == self.writer.close:
                    self.writer.close()


class NoWriter:
    """The writer side of a session that keeps no trace (``kmemtrace top`` without
    ``--record-to``): rows are dropped after the recorder's taps have seen them, nothing is
    ever queued, so nothing can be lost here."""

    failed = False
    queued_rows = 0

    def __init__(self, meta: dict):
        self.meta = meta
        self.dropped: Counter[int] = Counter()

    def put(self, cols: dict[str, np.ndarray], release: Callable[[], None] | None = None) -> None:
        if release is not None:
            release()

    def flush(self) -> None:
        pass

    def lost_rows(self) -> dict[tuple[int, int], int]:
        return {}

    def close(self) -> dict:
        return self.meta


def _reason(exc: BaseException) -> str:
    """One line for the error: 'No space left on device' rather than a repr."""
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        return os.strerror(exc.errno) if exc.errno else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
