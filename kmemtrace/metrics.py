"""Typed results of a replay, with units; the one object every report is made from.

:class:`StrategyMetrics` is frozen and flat so that the rich table, the 72-column text,
JSON and pandas all derive from it. Field metadata carries the unit and a one-line
description; reports print those, never their own wording.
"""

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from kmemtrace.model.state import (
    C_ALLOC_AFTER_OFFLINE,
    C_ALLOCS,
    C_ATOMIC,
    C_CACHES_CREATED,
    C_CACHES_DESTROYED,
    C_CTX_BYPASS,
    C_DEAD_CACHES,
    C_DEAD_EMPTY_PAGES,
    C_DEAD_FREES,
    C_DEAD_MEMCGS_PINNED,
    C_DEAD_PAGES,
    C_DESTROY_NONEMPTY,
    C_DLOG_LEN,
    C_DYING_MEMCGS,
    C_DYING_PC_MEMCGS,
    C_FLUSH,
    C_FREE_AFTER_DESTROY,
    C_FREES,
    C_IMPLIED_FREES,
    C_IPI,
    C_LIST_LOCK,
    C_LIVE_BYTES,
    C_LIVE_OBJS,
    C_LOST_EVENTS,
    C_META_CACHE_BYTES,
    C_META_MEMCG_BYTES,
    C_META_OBJCG_BYTES,
    C_MSTOCK_HIT,
    C_MSTOCK_MISS,
    C_NINST,
    C_OFFLINES,
    C_OUT_OF_ORDER,
    C_PAGE_CACHE_ROWS,
    C_PAGES_ALLOC,
    C_PAGES_FREED,
    C_PEAK_DEAD_CACHES,
    C_PEAK_DEAD_EMPTY_PAGES,
    C_PEAK_DEAD_MEMCGS_PINNED,
    C_PEAK_DEAD_PAGES,
    C_PEAK_DYING_MEMCGS,
    C_PEAK_DYING_PC_MEMCGS,
    C_PEAK_METADATA_BYTES,
    C_PEAK_STRANDED_BYTES,
    C_PEAK_STRANDED_OBJ_BYTES,
    C_PEAK_STRANDED_SLAB_PAGES,
    C_PEAK_TOTAL_PAGES,
    C_PEAK_WASTE_BYTES,
    C_PERCPU,
    C_RCU_GP,
    C_REAP_SCAN,
    C_REPARENT_MOVES,
    C_STOCK_HIT,
    C_STOCK_MISS,
    C_STRANDED_OBJ_BYTES,
    C_STRANDED_SLAB_PAGES,
    C_TOTAL_PAGES,
    C_UNKNOWN_CACHE,
    C_UNKNOWN_FREES,
    C_UNSAFE_DESTROY,
    C_VSAMPLE_IDX,
    D_T_DESTROY,
    D_T_OFFLINE,
    F_DEAD_EMPTY_PAGE_NS,
    F_DEAD_PAGE_NS,
    F_DYING_MEMCG_NS,
    F_DYING_PC_MEMCG_NS,
    F_LIVE_BYTES_NS,
    F_METADATA_BYTES_NS,
    F_SLAB_BYTES_NS,
    F_STRANDED_OBJ_BYTES_NS,
    F_STRANDED_SLAB_PAGE_NS,
    I_LIVE,
    I_MEMCG,
    I_NR_PAGES,
    I_STATE,
    I_T_DESTROY,
    I_T_OFFLINE,
    IS_FREE,
    M_STATE,
    M_T_FREE_PC,
    M_T_OFFLINE,
    MS_ONLINE,
    PAGE_SIZE,
    SERIES_NAMES,
    V_CACHE,
    V_KERNEL_OBJECTS,
    V_KERNEL_SLABS,
    V_MODEL_OBJECTS,
    V_MODEL_SLABS,
    V_TS,
)


def _m(unit: str, doc: str, group: str) -> dict:
    return {"unit": unit, "doc": doc, "group": group}


@dataclass(frozen=True)
class StrategyMetrics:
    """What one strategy did with one trace. Units in field metadata."""

    strategy: str = field(metadata=_m("", "strategy name", "id"))
    params: dict = field(metadata=_m("", "strategy parameters", "id"))
    era: str = field(metadata=_m("", "SLUB era modelled", "id"))

    # The fair metrics: defined the same way for every strategy (docs/replay.md).
    footprint_bytes_peak: int = field(metadata=_m(
        "B", "slab footprint: all slab pages of the modelled caches, peak", "footprint"))
    footprint_bytes_avg: float | None = field(metadata=_m(
        "B", "slab footprint, time average", "footprint"))
    footprint_bytes_end: int = field(metadata=_m(
        "B", "slab footprint at trace end", "footprint"))
    footprint_pages_peak: int = field(metadata=_m(
        "pages", "slab footprint, peak, in pages", "footprint"))
    footprint_pages_end: int = field(metadata=_m(
        "pages", "slab footprint at trace end, in pages", "footprint"))
    footprint_page_seconds: float = field(metadata=_m(
        "page·s", "time integral of the slab footprint", "footprint"))

    stranded_bytes_peak: int = field(metadata=_m(
        "B", "memory that exists only because of offline memcgs, peak", "stranded"))
    stranded_bytes_avg: float | None = field(metadata=_m(
        "B", "stranded memory, time average", "stranded"))
    stranded_bytes_end: int = field(metadata=_m(
        "B", "stranded memory at trace end", "stranded"))
    stranded_page_seconds: float = field(metadata=_m(
        "page·s", "time integral of stranded memory (bytes / 4096)", "stranded"))
    stranded_slab_bytes_peak: int = field(metadata=_m(
        "B", "whole slabs held: all live objects dead memcgs', or empty in a dead cache",
        "stranded"))
    stranded_slab_bytes_end: int = field(metadata=_m(
        "B", "whole slabs held at trace end", "stranded"))
    stranded_object_bytes_peak: int = field(metadata=_m(
        "B", "object bytes held: dead memcgs' objects in mixed slabs, peak", "stranded"))
    stranded_object_bytes_end: int = field(metadata=_m(
        "B", "object bytes held in mixed slabs at trace end", "stranded"))

    waste_bytes_peak: int = field(metadata=_m(
        "B", "slab bytes - live object bytes (fragmentation), peak", "waste"))
    waste_bytes_avg: float | None = field(metadata=_m(
        "B", "waste, time average", "waste"))
    waste_bytes_end: int = field(metadata=_m("B", "waste at trace end", "waste"))

    metadata_bytes_peak: int = field(metadata=_m(
        "B", "structs kept alive by dead memcgs (dead caches, dying memcgs, objcgs), peak",
        "metadata"))
    metadata_bytes_avg: float | None = field(metadata=_m(
        "B", "metadata kept alive, time average", "metadata"))
    metadata_bytes_end: int = field(metadata=_m(
        "B", "metadata kept alive at trace end", "metadata"))

    dying_memcgs_peak: int = field(metadata=_m(
        "memcgs", "offline memcgs still held (the era's rule), peak", "dying"))
    dying_memcgs_avg: float | None = field(metadata=_m(
        "memcgs", "dying memcgs, time average", "dying"))
    dying_memcgs_end: int = field(metadata=_m(
        "memcgs", "dying memcgs at trace end", "dying"))

    # Dying memcgs as the kernel counts them: held by slab (the era's rule) or by charged
    # page-cache pages (the same for every strategy). None: the trace has no page-cache rows.
    dying_memcgs_with_page_cache_peak: int | None = field(metadata=_m(
        "memcgs", "offline memcgs held by slab or by page cache, peak", "page_cache"))
    dying_memcgs_with_page_cache_avg: float | None = field(metadata=_m(
        "memcgs", "dying memcgs with page cache, time average", "page_cache"))
    dying_memcgs_with_page_cache_end: int | None = field(metadata=_m(
        "memcgs", "dying memcgs with page cache at trace end", "page_cache"))

    destroyed_at_offline: int = field(metadata=_m(
        "caches", "dead caches destroyed at offline (empty, or emptied by reparenting)",
        "destroy"))
    destroyed_later: int = field(metadata=_m(
        "caches", "dead caches destroyed after offline, within the trace", "destroy"))
    destroy_latency_p50_s: float | None = field(metadata=_m(
        "s", "offline -> destroy, median over the caches destroyed later", "destroy"))
    destroy_latency_p99_s: float | None = field(metadata=_m(
        "s", "offline -> destroy, 99th percentile over those", "destroy"))
    destroy_latency_max_s: float | None = field(metadata=_m(
        "s", "offline -> destroy, worst of those", "destroy"))
    dead_caches_never_destroyed: int = field(metadata=_m(
        "caches", "dead caches not destroyed by trace end", "destroy"))
    never_destroyed_live: int = field(metadata=_m(
        "caches", "... of which still hold live objects", "destroy"))
    never_destroyed_empty: int = field(metadata=_m(
        "caches", "... of which hold only empty slabs (a real leak; the rest hold nothing)",
        "destroy"))

    # Per-instance figures: they count dead per-memcg cache instances, which some designs
    # do not have, so they are no verdict on their own.
    pinned_pages_peak: int = field(metadata=_m(
        "pages", "pages of dead per-memcg cache instances, peak", "instances"))
    pinned_page_seconds: float = field(metadata=_m(
        "page·s", "time integral of pages of dead per-memcg cache instances", "instances"))
    pinned_pages_end: int = field(metadata=_m(
        "pages", "pages of dead per-memcg cache instances at trace end", "instances"))
    pinned_empty_pages_peak: int = field(metadata=_m(
        "pages", "... of which in empty slabs (parked), peak", "instances"))
    pinned_empty_page_seconds: float = field(metadata=_m(
        "page·s", "time integral of those empty-slab pages", "instances"))
    pinned_empty_pages_end: int = field(metadata=_m(
        "pages", "empty-slab pages of dead instances at trace end", "instances"))
    dead_caches_peak: int = field(metadata=_m(
        "caches", "peak cache instances of offline memcgs not yet destroyed", "instances"))
    dead_caches_end: int = field(metadata=_m(
        "caches", "dead cache instances still alive at trace end", "instances"))
    caches_created: int = field(metadata=_m("caches", "cache instances created", "instances"))
    caches_destroyed: int = field(metadata=_m(
        "caches", "cache instances destroyed", "instances"))
    dying_memcgs_pinned_peak: int = field(metadata=_m(
        "memcgs", "peak offline memcgs with live objects (objcg: their objcgs live)",
        "instances"))

    slab_pages_allocated: int = field(metadata=_m(
        "pages", "pages taken from the page allocator for slabs", "churn"))
    slab_pages_freed: int = field(metadata=_m(
        "pages", "slab pages given back to the page allocator", "churn"))
    slab_utilisation: float | None = field(metadata=_m(
        "%", "time-averaged live object bytes / slab bytes", "churn"))

    atomic_ops: int = field(metadata=_m("ops", "atomic RMW on shared counters", "cost"))
    percpu_ops: int = field(metadata=_m("ops", "percpu counter / percpu_ref ops", "cost"))
    list_lock_takes: int = field(metadata=_m("takes", "node list_lock acquisitions", "cost"))
    flush_ipis: int = field(metadata=_m("IPIs", "CPUs interrupted by flush_all", "cost"))
    flushes: int = field(metadata=_m("calls", "flush_all calls", "cost"))
    rcu_grace_periods: int = field(metadata=_m("GPs", "RCU grace periods waited/queued", "cost"))
    reaper_scan_work: int = field(metadata=_m(
        "units", "reaper work: caches x (CPUs + partial list)", "cost"))
    reparent_moves: int = field(metadata=_m(
        "moves", "slabs, caches or objcgs moved to a parent", "cost"))
    dead_cache_frees: int = field(metadata=_m(
        "frees", "frees into dead caches (Way #1's slow path)", "cost"))
    objcg_stock_hit_pct: float | None = field(metadata=_m(
        "%", "obj_cgroup per-CPU stock hits (objcg only)", "cost"))
    memcg_stock_hit_pct: float | None = field(metadata=_m(
        "%", "memcg per-CPU page stock hits (slab or objcg page charges)", "cost"))

    unsafe_destroy_windows: int = field(metadata=_m(
        "destroys", "destroys begun inside a free with no grace period (2014 race)", "safety"))
    free_after_destroy: int = field(metadata=_m(
        "frees", "frees into an already destroyed cache (invariant)", "safety"))
    destroy_with_live_objects: int = field(metadata=_m(
        "slabs", "slabs with live objects found at destroy (invariant)", "safety"))

    allocs: int = field(metadata=_m("events", "allocations replayed", "trace"))
    frees: int = field(metadata=_m("events", "frees paired with an allocation", "trace"))
    frees_unknown: int = field(metadata=_m(
        "events", "frees of objects not allocated in the trace", "trace"))
    frees_implied: int = field(metadata=_m(
        "events", "allocs of a still-live pointer (its free was not seen)", "trace"))
    objects_live_end: int = field(metadata=_m("objects", "objects live at trace end", "trace"))
    allocs_after_offline: int = field(metadata=_m(
        "events", "allocations charged to an offline memcg (given to its parent)", "trace"))
    allocs_interrupt_uncharged: int = field(metadata=_m(
        "events", "allocations in interrupt context, charged to no memcg", "trace"))
    allocs_unknown_cache: int = field(metadata=_m(
        "events", "allocations whose cache is not in meta (skipped)", "trace"))
    memcg_offlines: int = field(metadata=_m("events", "memcgs offlined", "trace"))
    out_of_order_events: int = field(metadata=_m(
        "events", "timestamps below an earlier event's (clamped)", "trace"))
    lost_events: int = field(metadata=_m("events", "events the recorder dropped", "trace"))
    page_cache_rows: int | None = field(metadata=_m(
        "events", "page-cache insertions and removals replayed", "trace"))

    loop_seconds: float = field(default=0.0, metadata=_m("s", "compiled loop time", "run"))

    def to_dict(self) -> dict:
        return asdict(self)


def field_info(name: str) -> dict:
    return next(f.metadata for f in fields(StrategyMetrics) if f.name == name)


def metric_fields(group: str | None = None) -> list[str]:
    """Names of the numeric metrics (optionally of one group), in declaration order."""
    return [f.name for f in fields(StrategyMetrics)
            if f.metadata["group"] not in ("id", "run") and (group is None or
                                                             f.metadata["group"] == group)]


def _pct(a: np.ndarray, q: float) -> float | None:
    # Sample values only (no interpolation), so a censored "never" stays inf, not NaN.
    return float(np.percentile(a, q, method="inverted_cdf")) if len(a) else None


def compute_metrics(run) -> StrategyMetrics:
    """Reduce a finished :class:`~kmemtrace.replay.engine.StrategyRun` to metrics."""
    m = run.model
    c = m.ctr
    # Caches never destroyed are censored at infinity: a strategy that leaks must not look
    # fast because it only destroyed the caches that were already empty at offline.
    lat = destroy_classes(run)
    slab_bytes_ns = m.fctr[F_SLAB_BYTES_NS]
    stock_total = c[C_STOCK_HIT] + c[C_STOCK_MISS]
    mstock_total = c[C_MSTOCK_HIT] + c[C_MSTOCK_MISS]
    span = float(run.span_ns)

    def avg(integral: float) -> float | None:
        return float(integral / span) if span > 0 else None

    stranded_slab_pages_end = int(c[C_STRANDED_SLAB_PAGES] + c[C_DEAD_EMPTY_PAGES])
    stranded_bytes_ns = m.fctr[F_STRANDED_SLAB_PAGE_NS] * PAGE_SIZE + m.fctr[
        F_STRANDED_OBJ_BYTES_NS]
    pc = run.page_cache
    metadata_end = (c[C_DEAD_CACHES] * c[C_META_CACHE_BYTES] + c[C_DYING_MEMCGS]
                    * c[C_META_MEMCG_BYTES] + c[C_DEAD_MEMCGS_PINNED] * c[C_META_OBJCG_BYTES])
    return StrategyMetrics(
        strategy=run.strategy.name, params=_jsonable(run.params), era=run.era.name,
        footprint_bytes_peak=int(c[C_PEAK_TOTAL_PAGES] * PAGE_SIZE),
        footprint_bytes_avg=avg(slab_bytes_ns),
        footprint_bytes_end=int(c[C_TOTAL_PAGES] * PAGE_SIZE),
        footprint_pages_peak=int(c[C_PEAK_TOTAL_PAGES]),
        footprint_pages_end=int(c[C_TOTAL_PAGES]),
        footprint_page_seconds=float(slab_bytes_ns / PAGE_SIZE / 1e9),
        stranded_bytes_peak=int(c[C_PEAK_STRANDED_BYTES]),
        stranded_bytes_avg=avg(stranded_bytes_ns),
        stranded_bytes_end=int(stranded_slab_pages_end * PAGE_SIZE + c[C_STRANDED_OBJ_BYTES]),
        stranded_page_seconds=float(stranded_bytes_ns / PAGE_SIZE / 1e9),
        stranded_slab_bytes_peak=int(c[C_PEAK_STRANDED_SLAB_PAGES] * PAGE_SIZE),
        stranded_slab_bytes_end=stranded_slab_pages_end * PAGE_SIZE,
        stranded_object_bytes_peak=int(c[C_PEAK_STRANDED_OBJ_BYTES]),
        stranded_object_bytes_end=int(c[C_STRANDED_OBJ_BYTES]),
        waste_bytes_peak=int(c[C_PEAK_WASTE_BYTES]),
        waste_bytes_avg=avg(slab_bytes_ns - m.fctr[F_LIVE_BYTES_NS]),
        waste_bytes_end=int(c[C_TOTAL_PAGES] * PAGE_SIZE - c[C_LIVE_BYTES]),
        metadata_bytes_peak=int(c[C_PEAK_METADATA_BYTES]),
        metadata_bytes_avg=avg(m.fctr[F_METADATA_BYTES_NS]),
        metadata_bytes_end=int(metadata_end),
        dying_memcgs_peak=int(c[C_PEAK_DYING_MEMCGS]),
        dying_memcgs_avg=avg(m.fctr[F_DYING_MEMCG_NS]),
        dying_memcgs_end=int(c[C_DYING_MEMCGS]),
        dying_memcgs_with_page_cache_peak=int(c[C_PEAK_DYING_PC_MEMCGS]) if pc else None,
        dying_memcgs_with_page_cache_avg=avg(m.fctr[F_DYING_PC_MEMCG_NS]) if pc else None,
        dying_memcgs_with_page_cache_end=int(c[C_DYING_PC_MEMCGS]) if pc else None,
        destroyed_at_offline=lat.at_offline,
        destroyed_later=len(lat.later_s),
        destroy_latency_p50_s=_pct(lat.later_s, 50),
        destroy_latency_p99_s=_pct(lat.later_s, 99),
        destroy_latency_max_s=_pct(lat.later_s, 100),
        dead_caches_never_destroyed=lat.never_live + lat.never_empty,
        never_destroyed_live=lat.never_live,
        never_destroyed_empty=lat.never_empty,
        pinned_pages_peak=int(c[C_PEAK_DEAD_PAGES]),
        pinned_page_seconds=float(m.fctr[F_DEAD_PAGE_NS] / 1e9),
        pinned_pages_end=int(c[C_DEAD_PAGES]),
        pinned_empty_pages_peak=int(c[C_PEAK_DEAD_EMPTY_PAGES]),
        pinned_empty_page_seconds=float(m.fctr[F_DEAD_EMPTY_PAGE_NS] / 1e9),
        pinned_empty_pages_end=int(c[C_DEAD_EMPTY_PAGES]),
        dead_caches_peak=int(c[C_PEAK_DEAD_CACHES]),
        dead_caches_end=int(c[C_DEAD_CACHES]),
        caches_created=int(c[C_CACHES_CREATED]),
        caches_destroyed=int(c[C_CACHES_DESTROYED]),
        dying_memcgs_pinned_peak=int(c[C_PEAK_DEAD_MEMCGS_PINNED]),
        slab_pages_allocated=int(c[C_PAGES_ALLOC]),
        slab_pages_freed=int(c[C_PAGES_FREED]),
        slab_utilisation=(float(100.0 * m.fctr[F_LIVE_BYTES_NS] / slab_bytes_ns)
                          if slab_bytes_ns > 0 else None),
        atomic_ops=int(c[C_ATOMIC]), percpu_ops=int(c[C_PERCPU]),
        list_lock_takes=int(c[C_LIST_LOCK]), flush_ipis=int(c[C_IPI]),
        flushes=int(c[C_FLUSH]), rcu_grace_periods=int(c[C_RCU_GP]),
        reaper_scan_work=int(c[C_REAP_SCAN]), reparent_moves=int(c[C_REPARENT_MOVES]),
        dead_cache_frees=int(c[C_DEAD_FREES]),
        objcg_stock_hit_pct=(float(100.0 * c[C_STOCK_HIT] / stock_total)
                             if stock_total else None),
        memcg_stock_hit_pct=(float(100.0 * c[C_MSTOCK_HIT] / mstock_total)
                             if mstock_total else None),
        unsafe_destroy_windows=int(c[C_UNSAFE_DESTROY]),
        free_after_destroy=int(c[C_FREE_AFTER_DESTROY]),
        destroy_with_live_objects=int(c[C_DESTROY_NONEMPTY]),
        allocs=int(c[C_ALLOCS]), frees=int(c[C_FREES]),
        frees_unknown=int(c[C_UNKNOWN_FREES]), frees_implied=int(c[C_IMPLIED_FREES]),
        objects_live_end=int(c[C_LIVE_OBJS]),
        allocs_after_offline=int(c[C_ALLOC_AFTER_OFFLINE]),
        allocs_interrupt_uncharged=int(c[C_CTX_BYPASS]),
        allocs_unknown_cache=int(c[C_UNKNOWN_CACHE]),
        memcg_offlines=int(c[C_OFFLINES]),
        out_of_order_events=int(c[C_OUT_OF_ORDER]),
        lost_events=int(c[C_LOST_EVENTS]),
        page_cache_rows=int(c[C_PAGE_CACHE_ROWS]) if pc else None,
        loop_seconds=float(run.loop_seconds),
    )


@dataclass(frozen=True)
class DestroyClasses:
    """Dead per-memcg caches by fate: a single latency figure hides which is which."""

    at_offline: int  # destroyed in the offline instant
    later_s: np.ndarray  # offline -> destroy of those destroyed afterwards, s
    never_live: int  # not destroyed by trace end, still holding live objects
    never_empty: int  # not destroyed, holding only empty slabs: a leak


def _dead_caches(run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offline ns, destroy ns or -1, instance fields or None) of every per-memcg cache that
    went dead: those whose slot was freed (``dlog``), then those still in a slot."""
    m = run.model
    inst = m.inst[:, :int(m.ctr[C_NINST])]
    in_slot = (inst[I_STATE] != IS_FREE) & (inst[I_MEMCG] != 0) & (inst[I_T_OFFLINE] >= 0)
    freed = m.dlog[:, :int(m.ctr[C_DLOG_LEN])]
    offline = np.concatenate([freed[D_T_OFFLINE], inst[I_T_OFFLINE, in_slot]])
    destroy = np.concatenate([freed[D_T_DESTROY], inst[I_T_DESTROY, in_slot]])
    return offline, destroy, inst[:, in_slot]


def destroy_classes(run) -> DestroyClasses:
    offline, destroy, still = _dead_caches(run)
    destroyed = destroy >= 0
    at_offline = destroyed & (destroy == offline)
    later = destroyed & ~at_offline
    never = still[:, still[I_T_DESTROY] < 0]
    return DestroyClasses(
        at_offline=int(at_offline.sum()),
        later_s=(destroy[later] - offline[later]) / 1e9,
        never_live=int((never[I_LIVE] > 0).sum()),
        never_empty=int(((never[I_LIVE] == 0) & (never[I_NR_PAGES] > 0)).sum()),
    )


def destroy_latencies_s(run) -> np.ndarray:
    """Offline -> destroy of every dead per-memcg cache, s; inf where never destroyed."""
    offline, destroy, _ = _dead_caches(run)
    return np.where(destroy >= 0, destroy - offline, np.inf) / 1e9


def slab_samples(run) -> dict[str, np.ndarray]:
    """Each SLAB_SAMPLE of the trace beside the model's count for the same root cache."""
    v = run.model.vsample[:, :int(run.model.ctr[C_VSAMPLE_IDX])]
    return {"ts_ns": v[V_TS], "cache_id": v[V_CACHE], "kernel_slabs": v[V_KERNEL_SLABS],
            "kernel_objects": v[V_KERNEL_OBJECTS], "model_slabs": v[V_MODEL_SLABS],
            "model_objects": v[V_MODEL_OBJECTS]}


def memcg_free_times(run, memcg_ids: list[int]) -> dict[int, tuple[int, int | None]]:
    """Per memcg offlined in the replay: (offline ns, ns when nothing held it any more,
    page cache counted, or None while still held at the end). The model's side of a
    per-memcg comparison with the kernel's MEMCG_RELEASE rows."""
    g = run.model.memcg[:, :len(memcg_ids)]
    out = {}
    for idx in np.flatnonzero(g[M_STATE] != MS_ONLINE):
        free = int(g[M_T_FREE_PC, idx])
        out[int(memcg_ids[idx])] = (int(g[M_T_OFFLINE, idx]), free or None)
    return out


def series(run) -> dict[str, np.ndarray]:
    """The fixed-step time series of one run, by name."""
    return {name: run.model.series[i].copy() for i, name in enumerate(SERIES_NAMES)}


def _jsonable(params: dict) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
