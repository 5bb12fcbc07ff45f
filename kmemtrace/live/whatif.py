"""The live what-if: every selected strategy's model, fed from a recording as it happens.

A :class:`WhatIf` takes the recorder's batches as they leave the drain (unsorted across
CPUs), and runs the same compiled engine as ``kmemtrace replay`` (``prepare`` and
``run_chunk`` over one Model per strategy, started by ``start_run``). Its final metrics
equal a replay of the finished trace when both see the same rows in the same order:

* Order. The trace writer sorts by ``(ts_ns, seq)`` and holds back a reorder window;
  here a window is held back too, so rows are released in the same global order. A row
  older than what was already released is *late*: like the writer, it is clamped to the
  release edge and counted, and :attr:`late` > 0 means the results may differ. The window
  is wider than the writer's 50 ms because this one is cut at every batch, not every 10 s:
  slab samples and life-cycle rows are stamped when user space reads them, while the
  slab ring may hold up to ~0.5 s of older events on a busy host (seen here, `top
  --what-if` beside another session's 400 k events/s: 70,681 of 3.2 M rows late with a
  50 ms window; none in the next run, with 1 s).
* Start and end. The replay's clock starts at ``min(clock.start_ns, first event)`` and ends
  at ``max(clock.end_ns, last event)``; so the models are built at the first release, and
  finished with the sealed meta (:meth:`close`).
* Tables. Caches discovered during the recording, and their accounting flags, arrive with
  the batches (:meth:`update_caches`), before any row that names them.

The model starts empty at attach: objects allocated before the recording are not in it,
and their frees are counted as unknown, exactly as in the replay of the trace.
"""

from dataclasses import dataclass

import numpy as np

from kmemtrace.metrics import StrategyMetrics, compute_metrics
from kmemtrace.model.eras import geometry, get_era
from kmemtrace.model.metadata import metadata_costs
from kmemtrace.model.objects import grow_objects
from kmemtrace.model.state import (
    C_CTX_BYPASS,
    C_DEAD_CACHES,
    C_DEAD_EMPTY_PAGES,
    C_DYING_MEMCGS,
    C_LOST_EVENTS,
    C_STRANDED_OBJ_BYTES,
    C_STRANDED_SLAB_PAGES,
    C_TOTAL_PAGES,
    C_VSAMPLE_IDX,
    PAGE_SIZE,
    Model,
    grow_dlog,
    grow_instances,
    grow_memcgs,
    grow_slabs,
)
from kmemtrace.replay.engine import (
    Chunk,
    MemcgIndex,
    StrategyRun,
    _initial_memcgs,  # the replay's own rule for the memcgs present at the start
    accounting_scope,
    page_cache_recorded,
    prepare,
    start_run,
)
from kmemtrace.replay.loop import (
    NEED_DLOG,
    NEED_INSTANCES,
    NEED_OBJECTS,
    NEED_SLABS,
    finish,
    run_events,
)
from kmemtrace.strategies.base import Strategy
from kmemtrace.trace.schema import EventKind

REORDER_WINDOW_NS = 1_000_000_000  # twice the slab ring's capacity at full rate
INITIAL_STATE_NOTE = ("model starts empty at attach: slabs and objects that existed before "
                      "the recording are not modelled (their frees count as unknown)")


@dataclass(frozen=True)
class Now:
    """One strategy's fair metrics at the last replayed event (what the live view shows)."""

    strategy: str
    footprint_bytes: int
    stranded_bytes: int
    dying_memcgs: int
    dead_caches: int


class WhatIf:
    """``feed()`` recorder batches, ``now()`` for the view, ``close()`` for final metrics."""

    def __init__(self, meta: dict, selection: list[tuple[Strategy, dict]], era: str,
                 window_ns: int = REORDER_WINDOW_NS):
        self.meta = meta
        self.selection = selection
        self.era = get_era(era)
        self.window_ns = window_ns
        self.ncpu = max(int(meta.get("ncpus") or 1), 1)
        self.costs = metadata_costs(meta, self.ncpu)
        self.all_accounted, _, _ = accounting_scope(meta, self.era)
        self.memcgs = MemcgIndex()
        self.known = _initial_memcgs(meta, self.memcgs)
        self.runs: list[StrategyRun] = []
        self.caches: list[dict] = []
        self.accounted = np.zeros(1, dtype=bool)
        self.update_caches(meta["caches"])
        self.start_ns: int | None = None
        self._pending: list[dict[str, np.ndarray]] = []
        self._newest = np.iinfo(np.int64).min  # newest timestamp fed
        self.released_ts: int | None = None  # rows up to here are in the models
        self.events = 0  # rows replayed
        self.late = 0  # rows that arrived after their time was released (clamped)
        self.interrupt_allocs = 0

    def update_caches(self, caches: list[dict]) -> None:
        """The recorder's cache table as it is now (it only grows; flags may be set)."""
        self.caches = [dict(c) for c in caches]
        self.accounted = np.zeros(max(len(caches), 1), dtype=bool)
        for c in self.caches:
            self.accounted[c["id"]] = bool(c.get("accounted", False))
        self.runs = [_with_caches(run, geometry(self.caches, self.era))
                     for run in self.runs]

    def feed(self, cols: dict[str, np.ndarray]) -> None:
        """One drained batch (trace columns incl. ``seq``); releases what the window allows."""
        if len(cols["ts_ns"]) == 0:
            return
        self._pending.append(cols)
        self._newest = max(self._newest, int(cols["ts_ns"].max()))
        self._release(self._newest - self.window_ns)

    def now(self) -> list[Now]:
        return [_now(run) for run in self.runs]

    def close(self, final_meta: dict) -> list[StrategyMetrics]:
        """Release every row, finish each model at the trace's end, reduce to metrics."""
        self._release(None)
        clock = final_meta["clock"]
        if not self.runs:
            self._start(int(clock.get("start_ns") or 0))
        last = self.released_ts if self.released_ts is not None else self.start_ns
        end = max(int(clock.get("end_ns") or last), last, self.start_ns)
        lost_in_meta = int(final_meta["lost"]["total"])
        has_pc = page_cache_recorded(final_meta)  # as the replay of the sealed trace says
        out = []
        for run in self.runs:
            run.page_cache = has_pc
            finish(run.model, run.pol, end)
            run.model.ctr[C_CTX_BYPASS] = self.interrupt_allocs
            run.model.ctr[C_LOST_EVENTS] = max(run.model.ctr[C_LOST_EVENTS], lost_in_meta)
            run.span_ns = end - self.start_ns
            out.append(compute_metrics(run))
        return out

    # --- internals ------------------------------------------------------------------------

    def _release(self, cutoff: int | None) -> None:
        """Sort what is pending; replay the rows at or before ``cutoff`` (None: all)."""
        if not self._pending:
            return
        cols = {k: np.concatenate([b[k] for b in self._pending]) for k in self._pending[0]}
        order = np.lexsort((cols["seq"], cols["ts_ns"]))
        cols = {k: c[order] for k, c in cols.items()}
        if self.released_ts is not None:
            late = cols["ts_ns"] < self.released_ts
            if late.any():  # as the writer does: keep the row at the edge, in order
                self.late += int(late.sum())
                cols["ts_ns"][late] = self.released_ts
                order = np.lexsort((cols["seq"], cols["ts_ns"]))
                cols = {k: c[order] for k, c in cols.items()}
        keep = (len(cols["ts_ns"]) if cutoff is None
                else int(np.searchsorted(cols["ts_ns"], cutoff, side="right")))
        rest = {k: c[keep:] for k, c in cols.items()}
        self._pending = [rest] if keep < len(cols["ts_ns"]) else []
        if keep:
            self._replay({k: c[:keep] for k, c in cols.items()})

    def _replay(self, cols: dict[str, np.ndarray]) -> None:
        if not self.runs:
            clock_start = self.meta["clock"].get("start_ns")
            first = int(cols["ts_ns"][0])
            self._start(first if clock_start is None else min(int(clock_start), first))
        chunk = prepare(cols, self.memcgs, self.accounted, self.ncpu,
                        all_accounted=self.all_accounted)
        self.interrupt_allocs += chunk.interrupt_allocs
        samples = int((chunk.kind == EventKind.SLAB_SAMPLE).sum())
        for run in self.runs:
            model = _room_for_samples(grow_memcgs(run.model, len(self.memcgs) + 1), samples)
            run.model = _run(model, run.pol, chunk)
        self.events += len(chunk.ts)
        self.released_ts = int(chunk.ts[-1])

    def _start(self, start: int) -> None:
        """The models at the replay's start (no time series: the view keeps its own)."""
        self.start_ns = start
        geom = geometry(self.caches, self.era)
        self.runs = [start_run(strategy, params, self.era, geom, self.ncpu, self.costs,
                               self.known, len(self.memcgs), start=start, samples=0, step=1,
                               n_slab_samples=0, span_ns=0)
                     for strategy, params in self.selection]


_GROW = {NEED_SLABS: grow_slabs, NEED_INSTANCES: grow_instances, NEED_OBJECTS: grow_objects,
         NEED_DLOG: grow_dlog}


def _run(model: Model, pol: np.ndarray, c: Chunk) -> Model:
    """The compiled loop over a whole chunk, growing the model whenever it asks (as the
    replay driver does; where it stops to grow changes no result)."""
    pos = 0
    while pos < len(c.ts):
        pos, need = run_events(model, pol, c.ts, c.kind, c.cpu, c.ptr, c.cache, c.memcg,
                               c.aux, c.aux2, pos)
        if need:
            model = _GROW[need](model)
    return model


def _with_caches(run: StrategyRun, geom: np.ndarray) -> StrategyRun:
    """The run with room for caches discovered since its model was made."""
    m = run.model
    extra = geom.shape[1] - m.geom.shape[1]
    if extra <= 0:
        return run
    inst_of = np.concatenate([m.inst_of, np.full((extra, m.inst_of.shape[1]), -1, np.int64)])
    run.model = m._replace(geom=geom.astype(np.int64), inst_of=inst_of)
    return run


def _room_for_samples(m: Model, more: int) -> Model:
    """The replay sizes the SLAB_SAMPLE pairs from meta; live, they grow as they come."""
    need = int(m.ctr[C_VSAMPLE_IDX]) + more
    if need <= m.vsample.shape[1]:
        return m
    grown = np.zeros((m.vsample.shape[0], max(need, 2 * m.vsample.shape[1])), np.int64)
    grown[:, :m.vsample.shape[1]] = m.vsample
    return m._replace(vsample=grown)


def _now(run: StrategyRun) -> Now:
    c = run.model.ctr
    stranded = ((c[C_STRANDED_SLAB_PAGES] + c[C_DEAD_EMPTY_PAGES]) * PAGE_SIZE
                + c[C_STRANDED_OBJ_BYTES])
    return Now(strategy=run.strategy.name, footprint_bytes=int(c[C_TOTAL_PAGES] * PAGE_SIZE),
               stranded_bytes=int(stranded), dying_memcgs=int(c[C_DYING_MEMCGS]),
               dead_caches=int(c[C_DEAD_CACHES]))

