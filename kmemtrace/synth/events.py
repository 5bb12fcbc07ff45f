"""Turn a memcg plan and an object population into sorted trace columns, in bulk.

Ordering: every event gets a float time; at equal times mkdir < alloc < free < offline <
release, so an event that must follow another never ties with it. A running maximum then
makes the integer timestamps strictly increasing. Pointers are unique
per object, in a per-cache address region, so no two live objects ever share one; FREEs of
objects allocated before the trace use a disjoint region, as the kernel's pre-existing
objects would.

Contexts (``ctx``): frees that run on another CPU than the allocation (and frees of
pre-existing objects) are RCU/softirq frees, as ~30 % of real frees are; a small share of
allocations run in softirq or hardirq context, which no kernel charges to the interrupted
task's memcg, so replay's context rule is exercised. Everything else runs in a task.
"""

import numpy as np

from kmemtrace.synth.base import Synthesis
from kmemtrace.synth.geometry import CACHES
from kmemtrace.synth.population import MemcgPlan, Population
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
RELEASE_DELAY_MEAN_NS = 50_000_000  # css free runs after an RCU grace period and a work item
SOFTIRQ_ALLOC_SHARE = 0.008  # allocations from softirq (network RX, timers, RCU) ...
HARDIRQ_ALLOC_SHARE = 0.002  # ... and from hardirq handlers

_SIZES = np.array([c.size for c in CACHES], dtype=np.int64)


def release_times(rng: np.random.Generator, plan: MemcgPlan, pop: Population) -> np.ndarray:
    """When each offlined memcg is freed: after its offline and its last charged object.

    A memcg some object still pins at the end (free_t = inf) is never released.
    """
    last_free = np.full(plan.n, -np.inf)
    np.maximum.at(last_free, pop.memcg, pop.free_t)
    delay = rng.exponential(RELEASE_DELAY_MEAN_NS, size=plan.n)
    return np.maximum(plan.offline_t, last_free) + 1.0 + delay


def object_pointers(cache: np.ndarray) -> np.ndarray:
    """A distinct address per object: its rank within its cache times the object size."""
    rank = np.zeros(len(cache), dtype=np.int64)
    for cache_id in np.unique(cache):
        mine = cache == cache_id
        rank[mine] = np.cumsum(mine)[mine] - 1
    return _region(cache) + (rank * _SIZES[cache]).astype(np.uint64)


def _region(cache: np.ndarray) -> np.ndarray:
    return np.uint64(DIRECT_MAP) + (cache.astype(np.uint64) << np.uint64(REGION_SHIFT))


def strictly_increasing_ns(t_sorted: np.ndarray) -> np.ndarray:
    """Integer ns from sorted float times, bumped by the least needed to never repeat."""
    t = np.floor(t_sorted).astype(np.int64)
    idx = np.arange(len(t), dtype=np.int64)
    t -= idx
    np.maximum.accumulate(t, out=t)
    t += idx
    return t


class _Segment:
    """Events of one kind, sorted by time, with the columns that are not defaults."""

    def __init__(self, kind: EventKind, t: np.ndarray, **cols: np.ndarray):
        order = np.argsort(t)  # ties within one kind may fall either way
        self.kind = kind
        self.t = t[order]
        self.cols = {name: np.asarray(c)[order] for name, c in cols.items()}


def _mark_contexts(rng: np.random.Generator, segments: list[_Segment]) -> None:
    """Drawn after every other column, so the rest of a seed's trace does not change."""
    for s in segments:
        ctx = np.full(len(s.t), EventContext.TASK, np.uint8)
        if s.kind == EventKind.FREE:
            ctx[s.cols.get("pid", np.zeros(len(s.t))) == 0] = EventContext.SOFTIRQ
        elif s.kind == EventKind.ALLOC:
            u = rng.random(len(s.t))
            ctx[u < SOFTIRQ_ALLOC_SHARE + HARDIRQ_ALLOC_SHARE] = EventContext.SOFTIRQ
            ctx[u < HARDIRQ_ALLOC_SHARE] = EventContext.HARDIRQ
        s.cols["ctx"] = ctx


def assemble(
    rng: np.random.Generator,
    plan: MemcgPlan,
    pop: Population,
    *,
    duration_ns: int,
    ncpus: int,
    pressure_rate: float,
    preexisting_frees: int,
) -> Synthesis:
    """Every event of the trace, sorted, with ``seq`` = row index.

    Each kind is sorted on its own, then one stable sort merges the sorted runs (timsort:
    cheap on runs, and the gather that follows reads each run sequentially). Segments are
    listed in priority order, so at equal times stability puts mkdir before alloc before
    free before offline before release.
    """
    end_t = float(duration_ns)
    freed = np.flatnonzero(pop.free_t < end_t)
    offlined = np.flatnonzero(plan.offline_t < end_t)
    release_t = release_times(rng, plan, pop)
    released = np.flatnonzero(release_t < end_t)
    n_pressure = rng.poisson(pressure_rate * duration_ns / 1e9)
    pre_cache = rng.integers(0, len(CACHES), size=preexisting_frees).astype(np.int32)
    ptr = object_pointers(pop.cache)
    # A remote free runs in softirq/RCU context: no task to name.
    free_pid = np.where(pop.free_cpu[freed] == pop.alloc_cpu[freed], pop.pid[freed], 0)

    segments = [
        _Segment(EventKind.MEMCG_MKDIR, plan.mkdir_t, memcg_id=plan.ids,
                 aux=plan.parents.astype(np.int64), aux2=plan.levels,
                 pid=np.ones(plan.n, np.int32), cpu=rng.integers(0, ncpus, size=plan.n)),
        _Segment(EventKind.ALLOC, pop.alloc_t, ptr=ptr, cache_id=pop.cache,
                 memcg_id=plan.ids[pop.memcg], bytes=_SIZES[pop.cache],
                 gfp=np.full(len(pop), ALLOC_GFP, np.uint32), pid=pop.pid, cpu=pop.alloc_cpu),
        _Segment(EventKind.FREE, pop.free_t[freed], ptr=ptr[freed], cache_id=pop.cache[freed],
                 cpu=pop.free_cpu[freed], pid=free_pid),
        _Segment(EventKind.FREE, rng.random(preexisting_frees) * end_t,
                 ptr=_region(pre_cache) + np.uint64(PREEXISTING_OFFSET)
                 + np.arange(preexisting_frees, dtype=np.uint64)
                 * _SIZES[pre_cache].astype(np.uint64),
                 cache_id=pre_cache, cpu=rng.integers(0, ncpus, size=preexisting_frees)),
        _Segment(EventKind.PRESSURE, rng.random(n_pressure) * end_t,
                 memcg_id=np.full(n_pressure, ROOT_MEMCG_ID, np.uint64),
                 aux=np.full(n_pressure, PressureKind.SYNTH, np.int64),
                 cpu=rng.integers(0, ncpus, size=n_pressure)),
        _Segment(EventKind.MEMCG_OFFLINE, plan.offline_t[offlined], memcg_id=plan.ids[offlined],
                 aux=np.full(len(offlined), OfflineSource.SYNTH, np.int64),
                 pid=np.ones(len(offlined), np.int32),
                 cpu=rng.integers(0, ncpus, size=len(offlined))),
        _Segment(EventKind.MEMCG_RELEASE, release_t[released], memcg_id=plan.ids[released],
                 cpu=rng.integers(0, ncpus, size=len(released))),
    ]
    _mark_contexts(rng, segments)
    t = np.concatenate([s.t for s in segments])
    order = np.argsort(t, kind="stable")
    total = len(t)
    defaults = empty_columns(0)
    cols = {}
    for name, dt in COLUMNS.items():
        if name in ("ts_ns", "seq"):
            continue
        if name == "kind":
            col = np.repeat(np.array([s.kind for s in segments], dt), [len(s.t) for s in segments])
        else:
            fill = defaults[name].dtype.type(-1 if name == "cache_id" else 0)
            col = np.concatenate([s.cols[name].astype(dt, copy=False) if name in s.cols
                                  else np.full(len(s.t), fill, dt) for s in segments])
        cols[name] = col[order]
    cols = {"ts_ns": TRACE_BASE_NS + strictly_increasing_ns(t[order]),
            "seq": np.arange(total, dtype=np.int64), **cols}
    end_ns = max(TRACE_BASE_NS + duration_ns, int(cols["ts_ns"][-1]) if total else 0)
    return Synthesis(columns=cols, memcgs=plan.to_meta(), start_ns=TRACE_BASE_NS,
                     end_ns=end_ns, ncpus=ncpus)
