"""Replay driver: stream a trace once, feed every selected strategy's model.

The trace is read :data:`BATCH_ROWS` rows at a time (memory bounded by live objects, not
trace length). Each batch is prepared once (memcg ids to dense indices, unaccounted
allocations to the root memcg) and handed to every strategy's compiled loop, so ``--strategy all``
reads the trace a single time; each strategy replays in its own thread (the loop releases
the GIL), as many at once as there are usable CPUs, while the next batch is read.
"""

import ctypes
import functools
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from kmemtrace.errors import UsageError
from kmemtrace.model.eras import DEFAULT_ERA, ERA_3_14, Era, geometry, get_era
from kmemtrace.model.metadata import MetadataCosts, metadata_costs
from kmemtrace.model.objects import grow_objects
from kmemtrace.model.start import (
    SLAB_CPU,
    SLAB_ROLE,
    hold_everything,
    lay_out_all,
    slab_roles,
)
from kmemtrace.model.state import (
    C_CTX_BYPASS,
    C_ERA,
    C_LAST_TS,
    C_LOST_EVENTS,
    C_META_CACHE_BYTES,
    C_META_MEMCG_BYTES,
    C_META_OBJCG_BYTES,
    C_NEXT_SAMPLE,
    C_NEXT_TICK,
    C_PAGE_REF,
    G_OBJS,
    M_OBJCGS,
    M_PARENT,
    Model,
    grow_dlog,
    grow_instances,
    grow_memcgs,
    grow_slabs,
    new_model,
)
from kmemtrace.replay.loop import (
    NEED_DLOG,
    NEED_INSTANCES,
    NEED_OBJECTS,
    NEED_SLABS,
    check_reaper_ticks,
    finish,
    run_events,
)
from kmemtrace.replay.policy import (
    PO_ERA,
    PO_OBJCG,
    PO_PAGE_REF,
    PO_REAP_PERIOD_NS,
    PO_SAMPLE_STEP_NS,
    new_policy,
)
from kmemtrace.replay.prep import insert_ids, map_charged, map_ids
from kmemtrace.replay.whatif import kernel_start, map_cpus, pre_start, shrunk_starts
from kmemtrace.strategies.base import Strategy
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import ROOT_MEMCG_ID, EventContext, EventKind

DEFAULT_SAMPLES = 500
# Rows per batch. Small enough that the loops start after one small decode and the last
# batch's loop is short (a batch is not overlapped at either end: 1 Mi-row row groups cost
# ~10 % of a 10 M-event replay so) and that the batches in flight stay a few MB each
# (~50 B per row); large enough that per-batch costs (a queue hand-off per strategy, one
# compiled call) are noise.
BATCH_ROWS = 1 << 17
PREFETCH = 4  # prepared batches a strategy may have waiting: bounds memory, lets it run ahead
# Batches between two returns of freed memory to the kernel (~8 M rows): the allocators
# keep what the batches and grown arrays freed, and that slack, not live state, made the
# peak RSS creep with trace length (+30 MB from 10 M to 100 M events); a return costs ~1 ms.
TRIM_EVERY = 64
_COLUMNS = ["ts_ns", "kind", "cpu", "ptr", "cache_id", "memcg_id", "gfp", "aux", "aux2",
            "ctx"]
_INTERRUPT = np.zeros(256, dtype=bool)  # ctx (uint8) -> ran in interrupt context
_INTERRUPT[[EventContext.SOFTIRQ, EventContext.HARDIRQ, EventContext.NMI]] = True
_LIBC = ctypes.CDLL(None)  # malloc_trim: glibc, the C library this project runs on

_GROW = {NEED_SLABS: grow_slabs, NEED_INSTANCES: grow_instances, NEED_OBJECTS: grow_objects,
         NEED_DLOG: grow_dlog}


class MemcgIndex:
    """Trace memcg ids (inode numbers) -> dense indices; 0 is the root and 'unknown'.

    ``ids`` lists them in order of first appearance. Batches are mapped in compiled code
    (``replay/prep.py``) through an open-addressing table kept at most half full."""

    def __init__(self) -> None:
        self.ids: list[int] = [ROOT_MEMCG_ID]
        self._index: dict[int, int] = {0: 0, ROOT_MEMCG_ID: 0}
        self._keys = np.zeros(0, dtype=np.uint64)
        self._vals = np.zeros(0, dtype=np.int64)
        self._stale = True  # ``get`` added ids the table does not hold yet

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, memcg_id: int) -> int:
        idx = self._index.get(memcg_id)
        if idx is None:
            idx = len(self.ids)
            self._index[memcg_id] = idx
            self.ids.append(memcg_id)
            self._stale = True
        return idx

    def _rebuild(self, capacity: int) -> None:
        """A table of ``capacity`` (a power of two) slots, holding every id known."""
        self._keys = np.zeros(capacity, dtype=np.uint64)
        self._vals = np.full(capacity, -1, dtype=np.int64)
        insert_ids(self._keys, self._vals, np.fromiter(self._index, np.uint64),
                   np.fromiter(self._index.values(), np.int64))
        self._stale = False

    def map(self, ids: np.ndarray) -> np.ndarray:
        """The dense index of each id (new ids get the next ones)."""
        return self._map(ids, map_ids)

    def map_charged(self, ids: np.ndarray, kind: np.ndarray, cache: np.ndarray,
                    gfp: np.ndarray, ctx: np.ndarray, accounted_caches: np.ndarray,
                    all_accounted: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`map`, with allocations the era does not charge mapped to the root;
        (indices, counts as in ``prep.map_charged``), in the same pass."""
        counts = np.zeros(3, dtype=np.int64)
        out = self._map(ids, functools.partial(
            map_charged, kind, cache, gfp, ctx, accounted_caches, _INTERRUPT,
            int(EventContext.UNKNOWN), all_accounted, counts))
        return out, counts

    def _map(self, ids: np.ndarray, step: Callable) -> np.ndarray:
        """Run the compiled ``step`` over ``ids``, growing the table whenever it stops for
        room, and list the ids it met first."""
        ids = _frozen(ids, np.uint64)  # one compiled signature, whatever the caller has
        out = np.empty(len(ids), dtype=np.int64)
        pos = 0
        while True:
            if self._stale or 2 * len(self._index) >= len(self._keys):
                self._rebuild(max(64, 1 << (4 * len(self._index)).bit_length()))
            room = len(self._keys) // 2 - len(self._index)
            new_ids = np.empty(room, dtype=np.uint64)
            pos, n_new = step(ids, self._keys, self._vals, out, new_ids, pos, len(self.ids),
                              room)
            for memcg_id in new_ids[:n_new].tolist():
                self._index[memcg_id] = len(self.ids)
                self.ids.append(memcg_id)
            if pos == len(ids):
                return out


@dataclass
class Chunk:
    """One batch of events in the dtypes the compiled loop takes (``CHUNK_DTYPES``)."""

    ts: np.ndarray
    kind: np.ndarray
    cpu: np.ndarray
    ptr: np.ndarray
    cache: np.ndarray
    memcg: np.ndarray
    aux: np.ndarray
    aux2: np.ndarray
    interrupt_allocs: int = 0  # would have been charged, but ran in interrupt context
    unknown_ctx_allocs: int = 0  # allocations whose context the recorder could not tell


# The trace's own dtypes (``trace/schema.py``), memcg as a dense index. Every chunk has
# exactly these, C-contiguous and read-only, so the loop is compiled for one signature
# (numba compiles anew for another dtype, layout or writability), and a column the replay
# does not change is Arrow's buffer itself, not a copy.
CHUNK_DTYPES = {"ts": np.int64, "kind": np.uint8, "cpu": np.int32, "ptr": np.uint64,
                "cache": np.int32, "memcg": np.int64, "aux": np.int64, "aux2": np.int64}


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=dtype).view()
    a.flags.writeable = False
    return a


def prepare(cols: dict[str, np.ndarray], memcgs: MemcgIndex, accounted_caches: np.ndarray,
            ncpu: int, *, all_accounted: bool = False) -> Chunk:
    """Dense memcgs; allocations the era does not charge belong to the root.

    Uncharged are: allocations outside the accounting scope (from v4.5 only
    ``__GFP_ACCOUNT``/``SLAB_ACCOUNT``; with ``all_accounted``, the pre-4.5 scope, every
    allocation of a memcg's task), and allocations in interrupt context (softirq, hardirq,
    NMI), which no era charges to the interrupted task's memcg (``memcg_kmem_get_cache``'s
    ``in_interrupt()`` test in v3.14, ``memcg_kmem_bypass``'s ``!in_task()`` later, no
    task objcg in ``current_obj_cgroup`` since v6.8). Context "unknown" counts as task.

    Only ``memcg`` is always a new array; ``cache``, ``aux`` and ``cpu`` are copied only
    when a row needs changing (an unknown cache, a MEMCG_MKDIR's parent, a CPU beyond
    ``ncpu``), the other columns are passed as read."""
    kind = _frozen(cols["kind"], np.uint8)
    cache = _frozen(cols["cache_id"], np.int32)
    memcg, (interrupt_allocs, unknown_ctx_allocs, bad_caches) = memcgs.map_charged(
        cols["memcg_id"], kind, cache, _frozen(cols["gfp"], np.uint32),
        _frozen(cols["ctx"], np.uint8), accounted_caches, all_accounted)
    if bad_caches:
        cache = np.where((cache >= 0) & (cache < len(accounted_caches)), cache, -1)
    aux = cols["aux"]
    mkdir = np.flatnonzero(kind == EventKind.MEMCG_MKDIR)
    if len(mkdir):  # a new memcg's parent, after the batch's memcg ids (first appearance)
        aux = np.array(aux, dtype=np.int64)
        aux[mkdir] = memcgs.map(cols["aux"][mkdir])
    cpu = cols["cpu"]
    if len(cpu) and (cpu.min() < 0 or cpu.max() >= ncpu):
        cpu = cpu.astype(np.int64) % ncpu
    arrays = dict(ts=cols["ts_ns"], kind=kind, cpu=cpu, ptr=cols["ptr"], cache=cache,
                  memcg=memcg, aux=aux, aux2=cols["aux2"])
    return Chunk(**{name: _frozen(a, CHUNK_DTYPES[name]) for name, a in arrays.items()},
                 interrupt_allocs=int(interrupt_allocs),
                 unknown_ctx_allocs=int(unknown_ctx_allocs))


@dataclass
class StrategyRun:
    """One strategy's replay: its final model and what it was run with."""

    strategy: Strategy
    params: dict
    era: Era
    model: Model
    pol: np.ndarray
    span_ns: int = 0  # trace end - start: the time averages divide by it
    metadata: MetadataCosts | None = None
    loop_seconds: float = 0.0
    page_cache: bool = False  # the trace says which folios were in the page cache


@dataclass
class Replay:
    """The replay of one trace under several strategies."""

    trace: TraceReader
    runs: list[StrategyRun]
    memcg_ids: list[int]
    events: int = 0
    read_seconds: float = 0.0
    sample_times_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    offline_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    notes: list[str] = field(default_factory=list)  # what this replay assumed, for reports
    warnings: list[str] = field(default_factory=list)  # what the trace cannot support
    interrupt_allocs: int = 0
    unknown_ctx_allocs: int = 0


def accounting_scope(meta: dict, era: Era) -> tuple[bool, list[str], list[str]]:
    """(pre-4.5 scope?, notes, warnings) for replaying ``meta``'s trace in ``era``.

    Before v4.5 (a9bb7e620efd) a memcg with kmem accounting active had *every* slab
    allocation of its tasks accounted; since, only ``__GFP_ACCOUNT``/``SLAB_ACCOUNT``
    ones. The old scope needs a trace recorded with ``--all-objects``."""
    all_objects = (meta.get("record") or {}).get("all_objects")
    if era.code != ERA_3_14:
        return False, ["Accounting scope: __GFP_ACCOUNT / SLAB_ACCOUNT allocations only "
                       "(v4.5+)."], []
    if all_objects:
        return True, ["Accounting scope: every slab allocation of a memcg's tasks "
                      "(before v4.5, kmem accounting assumed active in every memcg), from "
                      "a trace recorded with --all-objects."], []
    why = ("recorded without --all-objects" if all_objects is False
           else "not known to hold unaccounted allocations")
    return False, ["Accounting scope: __GFP_ACCOUNT / SLAB_ACCOUNT allocations only, "
                   "although era 3.14 accounted every allocation."], [
        f"era 3.14 accounted every slab allocation of a memcg, but this trace was {why}: "
        "per-memcg caches and their dead pages are undercounted"]

def page_cache_recorded(meta: dict) -> bool:
    """The trace followed page-cache folios (PAGE_CACHE rows), so dying memcgs can be
    counted as the kernel counts them; older traces and kernels without the filemap raw
    tracepoints cannot."""
    return bool((meta.get("record") or {}).get("page_cache")
                or meta.get("counts", {}).get("PAGE_CACHE"))


def page_cache_note(recorded: bool) -> str:
    if not recorded:
        return ("Dying memcgs count slab only: the trace has no page-cache records (recorded "
                "before they existed, or on a kernel without the filemap raw tracepoints), so "
                "the page cache that also holds offline memcgs is not modelled.")
    return ("Dying memcgs with page cache: an offline memcg is also held while page-cache "
            "folios charged to it and inserted during the recording are cached (tmpfs and "
            "folios cached before the recording are not seen); dying_memcgs stays slab-only, "
            "the fair metric.")


def _initial_memcgs(meta: dict, memcgs: MemcgIndex) -> list[tuple[int, int]]:
    """(index, parent index) for memcgs that existed when the trace started."""
    return [(memcgs.get(int(g["id"])), memcgs.get(int(g.get("parent") or 0)))
            for g in meta.get("memcgs", []) if int(g["id"]) not in (0, ROOT_MEMCG_ID)]


def start_run(strategy: Strategy, params: dict, era: Era, geom: np.ndarray, ncpu: int,
              costs: MetadataCosts, known: list[tuple[int, int]], n_memcgs: int, *, start: int,
              samples: int, step: int, n_slab_samples: int, span_ns: int) -> StrategyRun:
    """One strategy's model at the trace's start: the clock, the strategy's timers, the
    metadata prices and the memcgs that already existed. Shared by the replay of a trace
    and the live what-if (``kmemtrace.live``), so both start from the same state."""
    pol = new_policy()
    strategy.configure(pol, params)
    pol[PO_ERA] = era.code
    pol[PO_SAMPLE_STEP_NS] = step
    model = grow_memcgs(new_model(geom, ncpu, samples, n_slab_samples=n_slab_samples),
                        n_memcgs + 1)
    model.ctr[C_LAST_TS] = start
    model.ctr[C_NEXT_SAMPLE] = start
    model.ctr[C_NEXT_TICK] = start + pol[PO_REAP_PERIOD_NS]
    model.ctr[C_ERA] = era.code
    model.ctr[C_PAGE_REF] = pol[PO_PAGE_REF]
    model.ctr[C_META_CACHE_BYTES] = costs.cache
    model.ctr[C_META_MEMCG_BYTES] = costs.memcg
    # Only the objcg design has obj_cgroups; before v5.9 nothing is priced for them.
    model.ctr[C_META_OBJCG_BYTES] = costs.objcg if pol[PO_OBJCG] else 0
    for idx, parent in known:
        model.memcg[M_PARENT, idx] = parent
        model.memcg[M_OBJCGS, idx] = 1
    return StrategyRun(strategy, params, era, model, pol, span_ns=span_ns, metadata=costs)


def replay(trace: TraceReader, selection: list[tuple[Strategy, dict]], *,
           era: str = DEFAULT_ERA, samples: int = DEFAULT_SAMPLES,
           progress: Callable[[int], None] | None = None, batch_rows: int | None = None,
           threads: int | None = None, cpus: int | None = None,
           from_kernel_state: bool = False, slab_samples: bool = True) -> Replay:
    """Replay ``trace`` under every (strategy, params) of ``selection``.

    The trace streams in batches of ``batch_rows`` rows (default :data:`BATCH_ROWS`),
    each decoded and prepared on the calling thread while the strategies replay earlier
    ones, and handed to every strategy's model in turn; strategies run in ``threads``
    threads (default: one per strategy, at most the usable CPUs). Neither changes a result.
    ``cpus``: replay as if on that many CPUs; ``from_kernel_state``: start the model from
    the kernel's slabs at record start (both in :mod:`kmemtrace.replay.whatif`).
    ``slab_samples``: pair each SLAB_SAMPLE row with the model's count (``metrics.
    slab_samples``, for validation); they cost 48 B a sample in every strategy's model, a
    recording's length times its caches (~17 MB an hour per strategy at 100 caches sampled
    every second), so a replay that only compares strategies leaves them out."""
    era_obj = get_era(era)
    caches = trace.caches
    geom = geometry(caches, era_obj)
    accounted = np.zeros(max(len(caches), 1), dtype=bool)
    for c in caches:
        accounted[c["id"]] = bool(c.get("accounted", False))
    recorded_cpus = max(int(trace.meta.get("ncpus") or 1), 1)
    ncpu = cpus or recorded_cpus
    start, end = trace.start_ns, max(trace.end_ns, trace.start_ns)
    step = max((end - start) // max(samples - 1, 1), 1)
    memcgs = MemcgIndex()
    known = _initial_memcgs(trace.meta, memcgs)
    costs = metadata_costs(trace.meta, ncpu)
    all_accounted, scope_notes, warnings = accounting_scope(trace.meta, era_obj)
    n_slab_samples = (int(trace.meta.get("counts", {}).get("SLAB_SAMPLE", 0))
                      if slab_samples else 0)
    runs = [start_run(strategy, params, era_obj, geom, ncpu, costs, known, len(memcgs),
                      start=start, samples=samples, step=step,
                      n_slab_samples=n_slab_samples, span_ns=end - start)
            for strategy, params in selection]
    for run in runs:
        check_reaper_ticks(run.strategy.name, run.pol, end - start)
    result = Replay(trace=trace, runs=runs, memcg_ids=memcgs.ids, notes=[
        f"Metadata kept alive is priced from {costs.source}, for {ncpu} CPUs and one node: "
        f"{costs.cache:,} B per dead cache instance (kmem_cache, per-CPU and per-node "
        f"parts, sysfs directory), {costs.memcg:,} B per dying memcg (mem_cgroup, per-node "
        f"and per-CPU statistics), {costs.objcg:,} B per obj_cgroup.", *scope_notes],
        warnings=warnings)
    offlines = []
    prelude = kernel_start(trace) if from_kernel_state else None
    if from_kernel_state:
        result.notes.append(
            "The model started from the kernel's slabs and objects at record start "
            + ("(objects of unknown owner, in the root caches)." if prelude is not None
               else "— but the trace has no /sys/kernel/slab sample: it started empty."))
    if prelude is not None:
        if cpus:
            prelude["cpu"] = map_cpus(prelude["cpu"], prelude["pid"], recorded_cpus, ncpu)
        missed = _start_from_kernel(runs, prelude, prepare(prelude, memcgs, accounted, ncpu,
                                                           all_accounted=all_accounted))
        if missed:
            result.notes.append(
                f"{missed} cache(s) could not be laid out as the first sample had them (the "
                "prelude made another number of slabs): SLUB's rules placed their slabs.")
    starts = shrunk_starts(trace) if prelude is not None else None
    # the first samples are read in the trace's first second: later batches need no look
    last_start = int(starts.max()) if starts is not None else np.iinfo(np.int64).min
    before_start = 0
    batches = trace.iter_batches(_COLUMNS + (["pid"] if cpus else []),
                                 batch_rows or BATCH_ROWS, use_threads=False)
    lanes = _Lanes(runs, _threads(threads, len(runs)), progress)
    try:
        t0 = time.perf_counter()
        for cols in batches:
            if len(cols["ts_ns"]) and cols["ts_ns"][0] < last_start:
                early = pre_start(cols, starts)  # a shrunk cache's events before its start:
                before_start += int(early.sum())  # their result is in its first sample
                cols = {k: v[~early] for k, v in cols.items()}
            if cpus:
                cols["cpu"] = map_cpus(cols["cpu"], cols["pid"], recorded_cpus, ncpu)
            chunk = prepare(cols, memcgs, accounted, ncpu, all_accounted=all_accounted)
            result.read_seconds += time.perf_counter() - t0
            result.interrupt_allocs += chunk.interrupt_allocs
            result.unknown_ctx_allocs += chunk.unknown_ctx_allocs
            offline = chunk.ts[chunk.kind == EventKind.MEMCG_OFFLINE]
            if len(offline):  # a few per trace: keep nothing for the batches without
                offlines.append(offline)
            result.events += len(chunk.ts)
            lanes.feed(chunk, len(memcgs))
            if lanes.fed % TRIM_EVERY == 0:
                _release_free_memory()
            t0 = time.perf_counter()
    except BaseException:
        lanes.stop()
        raise
    lanes.close()
    if starts is not None:
        result.notes.append(
            f"The caches shrunk at record start start at their first sample: their "
            f"{before_start:,} allocations and frees before it, whose result that sample "
            "holds, were taken as before the recording (docs/replay.md).")
    has_pc = page_cache_recorded(trace.meta)
    for run in runs:
        run.page_cache = has_pc
    result.notes.append(page_cache_note(has_pc))
    # A recording that could not write its last rows (disk full) counts their loss in meta
    # only: LOST rows of sealed parts alone would understate it.
    lost_in_meta = int(trace.meta["lost"]["total"])
    for run in runs:
        finish(run.model, run.pol, end)
        run.model.ctr[C_CTX_BYPASS] = result.interrupt_allocs
        run.model.ctr[C_LOST_EVENTS] = max(run.model.ctr[C_LOST_EVENTS], lost_in_meta)
    result.notes.append(
        f"Interrupt-context allocations are not charged to the interrupted task's memcg "
        f"(in_interrupt() / memcg_kmem_bypass / current_obj_cgroup): "
        f"{result.interrupt_allocs:,} such allocations went to the root caches. "
        f"{result.unknown_ctx_allocs:,} allocations of unknown context were treated as "
        "task context. Remote charging (set_active_memcg) is in the recorded memcg where "
        "the recorder could read it (docs/recording.md).")
    result.memcg_ids = memcgs.ids
    result.offline_ns = np.concatenate(offlines) if offlines else result.offline_ns
    result.sample_times_ns = start + step * np.arange(samples, dtype=np.int64)
    return result


def _release_free_memory() -> None:
    """Give the pages free in Arrow's pool and in glibc's heaps (every thread's arena) back
    to the kernel."""
    pa.default_memory_pool().release_unused()
    _LIBC.malloc_trim(0)


def _start_from_kernel(runs: list[StrategyRun], prelude: dict[str, np.ndarray],
                       chunk: Chunk) -> int:
    """Replay the prelude (the kernel's start state, not a recorded event) into every
    strategy's model with nothing drained or discarded, then lay each cache's starting
    slabs out where the kernel's first sample had them (``model/start.py``); returns the
    caches that could not be laid out in some strategy's model."""
    alloc = prelude["kind"] == EventKind.ALLOC
    roles = slab_roles(prelude["cache_id"][alloc], prelude[SLAB_ROLE][alloc],
                       prelude[SLAB_CPU][alloc],
                       runs[0].model.geom[G_OBJS])  # every strategy's geometry is the trace's
    missed = 0
    for run in runs:
        saved = hold_everything(run.model, list(roles))
        run.model, seconds = _run_chunk(run.model, run.pol, chunk)
        run.loop_seconds += seconds
        missed = max(missed, lay_out_all(run.model, saved, roles, run.era.code))
    return missed


def _run_chunk(model: Model, pol: np.ndarray, c: Chunk) -> tuple[Model, float]:
    """Run one strategy over one chunk; (the model, grown as needed; loop seconds)."""
    t0 = time.perf_counter()
    pos, n = 0, len(c.ts)
    while pos < n:
        pos, need = run_events(model, pol, c.ts, c.kind, c.cpu, c.ptr, c.cache, c.memcg,
                               c.aux, c.aux2, pos)
        if need:
            model = _GROW[need](model)
    return model, time.perf_counter() - t0


def _threads(threads: int | None, n_runs: int) -> int:
    """One thread per strategy, at most one per CPU this process may use."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"threads={threads}: must be at least 1")
        return threads
    return max(1, min(n_runs, len(os.sched_getaffinity(0))))


class _Lanes:
    """One thread per strategy, each replaying the batches in order into its own model.

    Strategies share nothing but the (read-only) batches, and the loop runs without the
    GIL, so ``threads`` of them run at once (a semaphore), each as far ahead as it can: a
    fast strategy does not wait at every batch for the slowest, and reading the next batch
    overlaps the loops. A lane holds at most ``PREFETCH`` batches not yet replayed, so the
    reader waits for the slowest strategy and memory stays bounded whatever the length.
    ``progress(n)`` is called once every strategy has replayed a batch of ``n`` events."""

    def __init__(self, runs: list[StrategyRun], threads: int,
                 progress: Callable[[int], None] | None) -> None:
        self.slots = threading.Semaphore(threads)
        self.progress = progress
        self.failed: BaseException | None = None
        self.stopping = False
        self.lock = threading.Lock()
        self.pending: dict[int, int] = {}  # batch number -> lanes yet to replay it
        self.fed = 0
        self.queues = [queue.Queue(maxsize=PREFETCH) for _ in runs]
        self.threads = [threading.Thread(target=self._lane, args=(run, q), daemon=True,
                                         name=f"kmemtrace-{run.strategy.name}")
                        for run, q in zip(runs, self.queues, strict=True)]
        for t in self.threads:
            t.start()

    def _lane(self, run: StrategyRun, q: queue.Queue) -> None:
        try:
            while (item := q.get()) is not None:
                number, chunk, n_memcgs = item
                if self.failed is not None or self.stopping:
                    continue  # drain: the replay is failing
                run.model = grow_memcgs(run.model, n_memcgs + 1)
                with self.slots:
                    run.model, seconds = _run_chunk(run.model, run.pol, chunk)
                run.loop_seconds += seconds
                self._done(number, len(chunk.ts))
        except BaseException as exc:  # handed to the feeding thread, which raises it
            self.failed = self.failed or exc
            while q.get() is not None:
                pass

    def _done(self, number: int, events: int) -> None:
        with self.lock:
            self.pending[number] -= 1
            last = self.pending[number] == 0
            if last:
                del self.pending[number]
        if last and self.progress is not None:
            self.progress(events)

    def feed(self, chunk: Chunk, n_memcgs: int) -> None:
        """Hand the next batch (and how many memcgs are known after it) to every lane."""
        if self.failed is not None:
            raise self.failed
        with self.lock:
            self.pending[self.fed] = len(self.queues)
        for q in self.queues:
            q.put((self.fed, chunk, n_memcgs))
        self.fed += 1

    def close(self) -> None:
        """Wait for every lane to finish; raise what failed in one."""
        self._join()
        if self.failed is not None:
            raise self.failed

    def stop(self) -> None:
        """The feeder failed: lanes drop what is queued and end."""
        self.stopping = True
        self._join()

    def _join(self) -> None:
        for q in self.queues:
            q.put(None)
        for t in self.threads:
            t.join()
