"""The what-if beside the recording: a child process fed by a bounded queue.

Why a process: the compiled loop holds a core for as long as it has events, and the drain
loop must never wait for it (a paused drain is a full ring, i.e. loss). In its own process
the replay takes a free core when there is one, runs at a lower priority than the
recorder, and falls behind when there is none.

Why bounded, and what falls off: the recorder's :meth:`LiveWhatIf.tap` only queues the
batch (pickling happens on the queue's feeder thread). Rows the child has not replayed yet
are counted; above ``max_rows`` the batch's ALLOC/FREE rows are skipped (life-cycle rows
always go through, as in the writer's queue), counted in :attr:`LiveWhatIf.skipped`, and
the what-if says it is no longer exact. The lag shown is the trace time between the
newest event queued and the newest one replayed.
"""

import contextlib
import copy
import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from kmemtrace.errors import KmemtraceError
from kmemtrace.live.whatif import Now, WhatIf
from kmemtrace.model.eras import get_era
from kmemtrace.strategies import select
from kmemtrace.trace.schema import EventKind, LostReason

MAX_BEHIND_ROWS = 2_000_000  # ~100 MB of queued columns
SNAPSHOT_INTERVAL_S = 0.5
HISTORY_S = 300  # trace time the sparklines cover
CHILD_NICE = 10
# what the replay reads (kmemtrace.replay.engine.prepare), and seq for the trace's order
_FEED_COLUMNS = ["ts_ns", "kind", "cpu", "ptr", "cache_id", "memcg_id", "gfp", "aux", "aux2",
                 "ctx", "seq"]
_DROPPABLE = np.array([EventKind.ALLOC, EventKind.FREE], np.uint8)
# The taps see every row before the writer's queue; these losses happen after them.
_WRITER_LOSS = (LostReason.WRITER_QUEUE, LostReason.WRITE_FAILED)


@dataclass
class Snapshot:
    """What the child last reported: the fair metrics now, per strategy."""

    now: list[Now]
    replayed_ts: int | None  # newest event in the models
    start_ns: int | None
    events: int
    late: int


@dataclass
class Final:
    """The what-if's final metrics (``StrategyMetrics.to_dict()`` each) and how exact."""

    strategies: list[dict]
    events: int
    late: int
    skipped: int
    writer_dropped: int  # rows the what-if replayed that the trace writer could not keep

    @property
    def exact(self) -> bool:
        return self.late == 0 and self.skipped == 0 and self.writer_dropped == 0


@dataclass
class History:
    """(trace time, value) points per strategy for the sparklines."""

    points: dict[str, deque] = field(default_factory=dict)

    def add(self, ts: int, now: list[Now]) -> None:
        for n in now:
            pts = self.points.setdefault(n.strategy, deque())
            pts.append((ts, n.stranded_bytes))
            while pts and pts[0][0] < ts - HISTORY_S * 1_000_000_000:
                pts.popleft()


class LiveWhatIf:
    """Parent side. :meth:`start`, :meth:`begin` at attach, then :meth:`tap` each batch,
    :meth:`poll` for the view, :meth:`close` with the sealed meta for the final metrics."""

    def __init__(self, strategy: str, params: dict[str, str], era: str,
                 max_rows: int = MAX_BEHIND_ROWS):
        self.selection = select(strategy, params)  # bad names fail before recording
        get_era(era)
        self.strategy, self.params, self.era = strategy, params, era
        self.max_rows = max_rows
        self.sent_rows = 0
        self.skipped = 0
        self.newest_ts: int | None = None
        self.snapshot: Snapshot | None = None
        self.history = History()
        self.error: str | None = None
        self._caches: list[dict] = []
        self._cache_sig: tuple = ()
        self._proc = None

    @property
    def names(self) -> list[str]:
        return [s.name for s, _ in self.selection]

    def start(self) -> None:
        """Start the child early: its imports overlap the BPF compile."""
        ctx = mp.get_context("spawn")  # the recorder has threads and BPF fds: never fork
        self._in = ctx.Queue()
        self._out = ctx.Queue()
        self._done = ctx.RawValue("q", 0)  # rows replayed; written by the child only
        self._proc = ctx.Process(target=_work, name="kmemtrace-whatif", daemon=True,
                                 args=(self._in, self._out, self._done, self.strategy,
                                       self.params, self.era))
        self._proc.start()

    def begin(self, meta: dict) -> None:
        """meta as it is at attach; ``meta["caches"]`` keeps growing and is followed."""
        self._caches = meta["caches"]
        self._cache_sig = _signature(self._caches)
        self._in.put(("meta", copy.deepcopy(meta)))  # pickled later, on another thread

    @property
    def behind_rows(self) -> int:
        return self.sent_rows - self._done.value

    @property
    def lag_s(self) -> float | None:
        """Trace seconds between the newest queued event and the newest replayed one."""
        snap = self.snapshot
        if self.newest_ts is None or snap is None or snap.replayed_ts is None:
            return None
        return max(self.newest_ts - snap.replayed_ts, 0) / 1e9

    def tap(self, cols: dict[str, np.ndarray]) -> None:
        """The recorder's batch, before the writer's queue. Never blocks."""
        if self.error is not None:
            return  # the child failed: the recording goes on without it
        sig = _signature(self._caches)
        if sig != self._cache_sig:  # new caches, or their accounting flags, came with it
            self._cache_sig = sig
            self._in.put(("caches", [dict(c) for c in self._caches]))
        n = len(cols["ts_ns"])
        if self.behind_rows + n > self.max_rows:
            keep = ~np.isin(cols["kind"], _DROPPABLE)
            self.skipped += n - int(keep.sum())
            cols = {k: c[keep] for k, c in cols.items()}
            n = len(cols["ts_ns"])
        if n == 0:
            return
        self._in.put(("rows", {k: cols[k] for k in _FEED_COLUMNS}))
        self.sent_rows += n
        newest = int(cols["ts_ns"].max())
        self.newest_ts = newest if self.newest_ts is None else max(self.newest_ts, newest)

    def poll(self) -> Snapshot | None:
        """Take the child's latest report (non-blocking); the latest one stays available."""
        if self.error is None and not self._proc.is_alive():
            self.error = f"its process ended (exit code {self._proc.exitcode})"
        while True:
            try:
                msg = self._out.get_nowait()
            except queue.Empty:
                return self.snapshot
            self._take(msg)

    def close(self, final_meta: dict) -> Final:
        """Replay what is still queued, finish at the trace's end; the final metrics."""
        self._in.put(("close", copy.deepcopy(final_meta)))
        while self.error is None:
            try:
                msg = self._out.get(timeout=SNAPSHOT_INTERVAL_S)
            except queue.Empty:
                if not self._proc.is_alive():
                    self.error = f"its process ended (exit code {self._proc.exitcode})"
                continue
            if msg[0] == "final":
                self._proc.join()
                strategies, events, late = msg[1:]
                by_reason = final_meta["lost"]["by_reason"]
                dropped = sum(by_reason.get(r.name, 0) for r in _WRITER_LOSS)
                return Final(strategies, events, late, self.skipped, dropped)
            self._take(msg)
        self.stop()
        raise KmemtraceError(f"the live what-if failed: {self.error}; the recording is "
                             "complete: replay it with `kmemtrace replay`")

    def stop(self) -> None:
        """End the child without results (the recording failed before close)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()

    def _take(self, msg: tuple) -> None:
        if msg[0] == "now":
            self.snapshot = msg[1]
            if self.snapshot.replayed_ts is not None:
                self.history.add(self.snapshot.replayed_ts, self.snapshot.now)
        elif msg[0] == "error":
            self.error = msg[1]


def _signature(caches: list[dict]) -> tuple:
    return tuple(c.get("accounted") for c in caches)


def _work(inbox, outbox, done, strategy, params, era) -> None:
    """The child: replay what arrives, report every ``SNAPSHOT_INTERVAL_S``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the recorder, which closes us
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, CHILD_NICE)
    try:
        kind, meta = inbox.get()
        if kind != "meta":  # closed before the recording started
            return
        whatif = WhatIf(meta, select(strategy, params), era)
        next_report = time.monotonic()
        while True:
            try:
                kind, body = inbox.get(timeout=SNAPSHOT_INTERVAL_S)
            except queue.Empty:
                kind, body = None, None
            if kind == "rows":
                whatif.feed(body)
                done.value += len(body["ts_ns"])
            elif kind == "caches":
                whatif.update_caches(body)
            elif kind == "close":
                metrics = whatif.close(body)
                outbox.put(("final", [m.to_dict() for m in metrics], whatif.events,
                            whatif.late))
                return
            if time.monotonic() >= next_report:
                outbox.put(("now", Snapshot(whatif.now(), whatif.released_ts,
                                            whatif.start_ns, whatif.events, whatif.late)))
                next_report = time.monotonic() + SNAPSHOT_INTERVAL_S
    except Exception as exc:  # reported to the parent, which says it in one line
        outbox.put(("error", f"{type(exc).__name__}: {exc}"))
