"""Turn a memcg plan and an object population into sorted trace columns, streamed.

Ordering: every event gets a float time; at equal times mkdir < alloc < free < pressure <
offline < release, so an event that must follow another never ties with it. A running
maximum then makes the integer timestamps strictly increasing, across batches. Pointers are unique
per object, in a per-cache address region, so no two live objects ever share one; FREEs of
objects allocated before the trace use a disjoint region, as the kernel's pre-existing
objects would.

Contexts (``ctx``): frees that run on another CPU than the allocation (and frees of
pre-existing objects) are RCU/softirq frees, as ~30 % of real frees are; a small share of
allocations run in softirq or hardirq context, which no kernel charges to the interrupted
task's memcg, so replay's context rule is exercised. Everything else runs in a task.
"""

from collections.abc import Callable, Iterator

import numpy as np

from kmemtrace.synth.geometry import CACHES
from kmemtrace.synth.population import MemcgPlan, Population, window_masses
from kmemtrace.trace.schema import (
    COLUMNS,
    GFP_ACCOUNT,
    ROOT_MEMCG_ID,
    EventContext,
    EventKind,
    OfflineSource,
    PressureKind,
    empty_columns,
)

TRACE_BASE_NS = 1_000_000_000_000  # a plausible CLOCK_MONOTONIC: 1000 s after boot
GFP_KERNEL = 0xCC0  # __GFP_RECLAIM | __GFP_IO | __GFP_FS on 6.x
ALLOC_GFP = GFP_KERNEL | GFP_ACCOUNT
DIRECT_MAP = 0xFFFF_8880_0000_0000  # x86-64 direct map, where slab objects live
REGION_SHIFT = 36  # 64 GiB of addresses per cache
PREEXISTING_OFFSET = 1 << 35  # upper half of a cache's region: objects from before the trace
OBJECTS_PER_WINDOW = 1 << 19  # about a million events drawn and sorted at a time
RELEASE_DELAY_MEAN_NS = 50_000_000  # css free runs after an RCU grace period and a work item
SOFTIRQ_ALLOC_SHARE = 0.008  # allocations from softirq (network RX, timers, RCU) ...
HARDIRQ_ALLOC_SHARE = 0.002  # ... and from hardirq handlers

_SIZES = np.array([c.size for c in CACHES], dtype=np.int64)


def strictly_increasing_ns(t_sorted: np.ndarray, after: int | None = None) -> np.ndarray:
    """Integer ns from sorted float times, bumped by the least needed to never repeat
    (nor to repeat or precede ``after``, the last stamp already handed out)."""
    t = np.floor(t_sorted).astype(np.int64)
    if after is not None and len(t):
        t[0] = max(t[0], after + 1)
    idx = np.arange(len(t), dtype=np.int64)
    t -= idx
    np.maximum.accumulate(t, out=t)
    t += idx
    return t


def _region(cache: np.ndarray) -> np.ndarray:
    return np.uint64(DIRECT_MAP) + (cache.astype(np.uint64) << np.uint64(REGION_SHIFT))


# At equal float times: mkdir < alloc < free < pressure < offline < release, so an event
# that must follow another never ties with it.
_PRIORITY = {EventKind.MEMCG_MKDIR: 0, EventKind.ALLOC: 1, EventKind.FREE: 2,
             EventKind.PRESSURE: 3, EventKind.MEMCG_OFFLINE: 4, EventKind.MEMCG_RELEASE: 5}
_PENDING = [name for name in COLUMNS if name not in ("ts_ns", "seq")]


class EventQueue:
    """Events drawn but not yet due: float time, priority and columns, unsorted."""

    def __init__(self) -> None:
        self.batches: list[dict[str, np.ndarray]] = []

    def add(self, kind: EventKind, t: np.ndarray, end_t: float, **cols) -> None:
        """Queue events of one kind (those at or after ``end_t`` never happen in the trace)."""
        keep = t < end_t
        n = int(keep.sum())
        if n == 0:
            return
        batch = {"t": t[keep], "prio": np.full(n, _PRIORITY[kind], np.int8),
                 "kind": np.full(n, kind, np.uint8)}
        defaults = empty_columns(0)
        for name in _PENDING:
            if name == "kind":
                continue
            dt = defaults[name].dtype
            if name in cols:
                batch[name] = np.asarray(cols[name]).astype(dt, copy=False)[keep]
            else:
                batch[name] = np.full(n, -1 if name == "cache_id" else 0, dt)
        self.batches.append(batch)

    def pop_before(self, t_end: float) -> dict[str, np.ndarray]:
        """Every queued event before ``t_end``, sorted by (time, priority); the rest stays.

        The sort is stable, and events are queued in a fixed order, so equal (time,
        priority) pairs come out the same way for the same seed."""
        if not self.batches:
            return {}
        cols = {name: np.concatenate([b[name] for b in self.batches])
                for name in self.batches[0]}
        order = np.lexsort((cols["prio"], cols["t"]))
        cols = {name: c[order] for name, c in cols.items()}
        k = int(np.searchsorted(cols["t"], t_end, side="left"))
        self.batches = [{name: c[k:] for name, c in cols.items()}] if k < len(order) else []
        return {name: c[:k] for name, c in cols.items()}


def _contexts(rng: np.random.Generator, kind: EventKind, pid: np.ndarray) -> np.ndarray:
    """FREEs without a task (remote, pre-existing) are softirq; a few ALLOCs are irqs."""
    ctx = np.full(len(pid), EventContext.TASK, np.uint8)
    if kind == EventKind.FREE:
        ctx[pid == 0] = EventContext.SOFTIRQ
    elif kind == EventKind.ALLOC:
        u = rng.random(len(pid))
        ctx[u < SOFTIRQ_ALLOC_SHARE + HARDIRQ_ALLOC_SHARE] = EventContext.SOFTIRQ
        ctx[u < HARDIRQ_ALLOC_SHARE] = EventContext.HARDIRQ
    return ctx


class _Pointers:
    """A distinct address per object: its rank within its cache times the object size,
    ranks counted on across windows."""

    def __init__(self) -> None:
        self.taken = np.zeros(len(CACHES), dtype=np.int64)

    def next(self, cache: np.ndarray) -> np.ndarray:
        rank = np.zeros(len(cache), dtype=np.int64)
        for cache_id in np.unique(cache):
            mine = cache == cache_id
            rank[mine] = self.taken[cache_id] + np.cumsum(mine)[mine] - 1
            self.taken[cache_id] += int(mine.sum())
        return _region(cache) + (rank * _SIZES[cache]).astype(np.uint64)


def stream_events(
    rng: np.random.Generator,
    plan: MemcgPlan,
    n_objects: int,
    draw: Callable[[int, np.ndarray, float, float], Population],
    *,
    duration_ns: int,
    ncpus: int,
    pressure_rate: float,
    preexisting_frees: int,
    objects_per_window: int = OBJECTS_PER_WINDOW,
) -> Iterator[dict[str, np.ndarray]]:
    """Every event of the trace, sorted, in batches, with ``seq`` = row index.

    Allocation time is cut into windows of about ``objects_per_window`` objects; each
    window's objects are drawn (``draw(n, mass, t0, t1)``), their ALLOCs and FREEs queued,
    and every queued event before the window's end is sorted and handed out. What stays
    queued is the FREEs (and memcg releases) still to come: memory holds one window and
    the objects alive across it, however long the trace. A memcg's release is drawn once
    its last object is: after its tasks' exit, within the window its exit falls in."""
    end_t = float(duration_ns)
    n_windows = max(1, -(-n_objects // objects_per_window))
    edges = np.linspace(0.0, end_t, n_windows + 1)
    mass = window_masses(plan, edges)
    per_window = rng.multinomial(n_objects, mass.sum(axis=1) / mass.sum())
    release_delay = rng.exponential(RELEASE_DELAY_MEAN_NS, size=plan.n)
    last_free = np.full(plan.n, -np.inf)
    released = np.zeros(plan.n, dtype=bool)
    pointers = _Pointers()
    q = EventQueue()
    q.add(EventKind.MEMCG_MKDIR, plan.mkdir_t, end_t, memcg_id=plan.ids,
          aux=plan.parents.astype(np.int64), aux2=plan.levels,
          pid=np.ones(plan.n, np.int32), cpu=rng.integers(0, ncpus, size=plan.n),
          ctx=np.full(plan.n, EventContext.TASK, np.uint8))
    pre_cache = rng.integers(0, len(CACHES), size=preexisting_frees).astype(np.int32)
    q.add(EventKind.FREE, rng.random(preexisting_frees) * end_t, end_t,
          ptr=_region(pre_cache) + np.uint64(PREEXISTING_OFFSET)
          + np.arange(preexisting_frees, dtype=np.uint64) * _SIZES[pre_cache].astype(np.uint64),
          cache_id=pre_cache, cpu=rng.integers(0, ncpus, size=preexisting_frees),
          ctx=np.full(preexisting_frees, EventContext.SOFTIRQ, np.uint8))
    n_pressure = rng.poisson(pressure_rate * duration_ns / 1e9)
    q.add(EventKind.PRESSURE, rng.random(n_pressure) * end_t, end_t,
          memcg_id=np.full(n_pressure, ROOT_MEMCG_ID, np.uint64),
          aux=np.full(n_pressure, PressureKind.SYNTH, np.int64),
          cpu=rng.integers(0, ncpus, size=n_pressure),
          ctx=np.full(n_pressure, EventContext.TASK, np.uint8))
    n = plan.n
    q.add(EventKind.MEMCG_OFFLINE, plan.offline_t, end_t, memcg_id=plan.ids,
          aux=np.full(n, OfflineSource.SYNTH, np.int64), pid=np.ones(n, np.int32),
          cpu=rng.integers(0, ncpus, size=n), ctx=np.full(n, EventContext.TASK, np.uint8))
    seq, last_ts = 0, None
    for w in range(n_windows):
        t0, t1 = edges[w], edges[w + 1]
        pop = draw(int(per_window[w]), mass[w], t0, t1)
        ptr = pointers.next(pop.cache)
        q.add(EventKind.ALLOC, pop.alloc_t, end_t, ptr=ptr, cache_id=pop.cache,
              memcg_id=plan.ids[pop.memcg], bytes=_SIZES[pop.cache],
              gfp=np.full(len(pop), ALLOC_GFP, np.uint32), pid=pop.pid, cpu=pop.alloc_cpu,
              ctx=_contexts(rng, EventKind.ALLOC, pop.pid))
        # A remote free runs in softirq/RCU context: no task to name.
        free_pid = np.where(pop.free_cpu == pop.alloc_cpu, pop.pid, 0)
        q.add(EventKind.FREE, pop.free_t, end_t, ptr=ptr, cache_id=pop.cache,
              cpu=pop.free_cpu, pid=free_pid, ctx=_contexts(rng, EventKind.FREE, free_pid))
        np.maximum.at(last_free, pop.memcg, pop.free_t)
        done = ~released & (plan.exit_t <= t1) if w < n_windows - 1 else ~released
        released |= done
        # After its offline and its last charged object, a grace period and a work item;
        # one an object pins at the end (free_t = inf) is never released.
        release_t = np.maximum(plan.offline_t, last_free) + 1.0 + release_delay
        idx = np.flatnonzero(done)
        q.add(EventKind.MEMCG_RELEASE, release_t[idx], end_t, memcg_id=plan.ids[idx],
              cpu=rng.integers(0, ncpus, size=len(idx)),
              ctx=np.full(len(idx), EventContext.TASK, np.uint8))
        due = q.pop_before(t1 if w < n_windows - 1 else np.inf)
        if not due or len(due["t"]) == 0:
            continue
        ts = TRACE_BASE_NS + strictly_increasing_ns(due["t"], None if last_ts is None
                                                    else last_ts - TRACE_BASE_NS)
        k = len(ts)
        batch = {"ts_ns": ts, "seq": np.arange(seq, seq + k, dtype=np.int64)}
        batch.update({name: due[name] for name in _PENDING})
        seq, last_ts = seq + k, int(ts[-1])
        yield {name: batch[name] for name in COLUMNS}
