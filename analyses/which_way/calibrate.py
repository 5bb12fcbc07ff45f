"""Calibration against kernel truth: the strategy the recording kernel runs, replayed on
its own recording, next to what that kernel reported while it ran.

* Slab pages per cache over time: the ``objcg`` model (6.x) in the recording kernel's SLUB
  era, started from the kernel's own state at record start (``from_kernel_state``: the
  first ``/sys/kernel/slab`` sample, objects of unknown owner), against every later
  ``/sys/kernel/slab`` sample. The *raw* error is the figure; the same replay started
  empty is shown beside it, to say how much of the fit the start state buys.
* Dying memcgs: the model's count against the kernel's, per memcg (MEMCG_RELEASE rows)
  and as the v1 equivalent the recording driver sampled: the era's slab rule alone, and
  with the page cache that also holds an offline memcg (PAGE_CACHE rows, when the recorder
  had them: that is the count the kernel keeps, and the one compared). Both are
  whole-system; the kernel's count includes memcgs that were dying before the recording
  began, which the model cannot know of, so the comparison is of the change since the
  start, with those memcgs' own releases taken from the trace
  (:mod:`analyses.which_way.dying`).

The raw median over every cache and sample is near zero by construction (the start is the
first sample, and most caches barely move): the headline beside it is the error over the
samples after :data:`SETTLE_S` and over the caches that moved (:data:`MOVED_PCT`), and the
worst caches are listed with the trace's own allocation and free counts for them, which
say whether their frees reach the tracepoints at all. The worst per cache is also given
over the caches whose frees and allocations do reach the recorder (:func:`untraced`):
the others are listed with their evidence, never dropped silently.
"""

import hashlib
import inspect
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analyses.which_way.dying import dying_fit
from analyses.which_way.record import truth_path
from analyses.which_way.sweep import MAIN_ERA, TraceSpec, cached, pmap
from kmemtrace.metrics import slab_samples
from kmemtrace.replay import whatif
from kmemtrace.replay.engine import replay
from kmemtrace.report.validate import ErrorStats, Validation, pct_error, validate
from kmemtrace.strategies import select
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import SAMPLE_HAS_CPU_FIELDS, EventKind

STRATEGY = "objcg"
TARGET_MEDIAN_PCT = 10.0
TARGET_WORST_PCT = 25.0
TARGET_DYING_PCT = 10.0
# The raw median is ~0 partly by construction: the model starts from the first sample, and
# most caches barely move in a minute. Two errors that are not: samples from SETTLE_S on,
# and caches whose kernel page count moved by MOVED_PCT of its start at some sample.
SETTLE_S = 10.0
MOVED_PCT = 25.0
WORST_LISTED = 8
LIVE_OVER = "the trace holds more of its objects live than the kernel's `objects`"
UNSEEN = "the kernel's samples prove frees the trace missed"
UNSEEN_ALLOCS = "the kernel's samples prove allocations the trace missed"
# A saved calibration is reused only if the prelude that seeds it and this module are the
# ones that made it (``--cache``): either changes the fit, and the replays do not notice.
CACHE_KEY = (STRATEGY, *(hashlib.sha256(inspect.getsource(m).encode()).hexdigest()[:16]
                         for m in (whatif, sys.modules[__name__])))


@dataclass
class Sampling:
    """How a trace's /sys/kernel/slab samples were taken: how many rows, how many also say
    what the CPUs hold (``cpu_slabs``, ``partial``, ``objects_partial``: the prelude's
    start is then exact but for the CPU-held slabs' objects), whether each row has its
    own cache's stamp (recorders before 2026-11-27 stamped a round once), whether the
    cache table says which CPU's partial list held how many slabs at the start, and
    whether each cache was shrunk right before its first sample (``record
    --shrink-at-start``: the CPUs then held next to nothing, and ``objects`` was live)."""

    rows: int
    cpu_rows: int
    own_stamps: bool
    cpu_partial_start: bool  # the cache table says each CPU's partial slabs at the start
    shrunk: bool  # recorded with --shrink-at-start
    start_slabs: int  # the first sample's slabs, summed over the caches
    start_cpu_slabs: int  # of those, the ones a CPU held (the start's unknown objects)

    @classmethod
    def of(cls, trace: TraceReader) -> "Sampling":
        ts, flag, cache, slabs, cpu = [], [], [], [], []
        for cols in trace.iter_parts(["ts_ns", "kind", "gfp", "cache_id", "aux", "bytes"]):
            sel = cols["kind"] == EventKind.SLAB_SAMPLE
            ts.append(cols["ts_ns"][sel])
            flag.append(cols["gfp"][sel] == SAMPLE_HAS_CPU_FIELDS)
            cache.append(cols["cache_id"][sel])
            slabs.append(cols["aux"][sel])
            cpu.append(cols["bytes"][sel])
        ts, flag, cache = _cat(ts), _cat(flag), _cat(cache)
        first = np.unique(cache, return_index=True)[1]  # rows are in time order
        first = first[flag[first]]
        return cls(len(ts), int(flag.sum()), whatif.own_stamps(ts),
                   any("cpu_partial_start" in c for c in trace.caches),
                   trace.meta["record"].get("shrunk_at_start") is not None,
                   int(_cat(slabs)[first].sum()), int(_cat(cpu)[first].sum()))


@dataclass
class Calibration:
    """One trace's fit: slab pages (seeded and empty start) and dying memcgs."""

    group: str
    run: int
    seeded: Validation
    empty: ErrorStats  # raw error of the same replay started empty (first run only)
    t_s: np.ndarray  # per sample round
    kernel_pages: np.ndarray  # summed over scored caches
    model_pages: np.ndarray  # raw (not baseline-corrected), summed likewise
    dying: pd.DataFrame | None  # t_s, kernel (change since start), model, model_pc
    settled: ErrorStats  # raw error over samples from SETTLE_S on, every scored cache
    moved: ErrorStats  # raw error over the caches that moved, samples after the first
    n_moved: int
    worst: list[dict]  # the worst caches by raw error, with the trace's counts for them
    traced_worst_pct: float | None  # worst raw error over the caches whose events are traced
    traced_worst_cache: str
    excluded: list[dict]  # the caches left out of it, each with its error and why
    over_target: list[dict]  # the traced fits whose worst misses the target, and by what
    sampling: "Sampling"  # how the recorder sampled /sys/kernel/slab (old traces differ)

    def caches_on_target(self) -> tuple[int, int]:
        """(caches whose raw median and worst are within target, caches scored)."""
        ok = sum(1 for f in self.seeded.caches if f.raw.median_pct is not None
                 and f.raw.median_pct <= TARGET_MEDIAN_PCT
                 and abs(f.raw.worst_pct) <= TARGET_WORST_PCT)
        return ok, len(self.seeded.caches)

    def dying_error(self) -> tuple[float, float, float | None] | None:
        """(kernel, slab-only model, model with page cache or None) change in dying
        memcgs at the end of the recording."""
        if self.dying is None or self.dying.empty:
            return None
        last = self.dying.iloc[-1]
        pc = None if np.isnan(last.model_pc) else float(last.model_pc)
        return float(last.kernel), float(last.model), pc


def _validation(trace: TraceReader, seeded: bool):
    result = replay(trace, select(STRATEGY, {}), era=MAIN_ERA, samples=200,
                    from_kernel_state=seeded)
    run = result.runs[0]
    v = validate(slab_samples(run), trace.caches, trace.start_ns, STRATEGY,
                 trace.meta.get("record", {}).get("all_objects"))
    return v, result, run


def _raw_totals(v: Validation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = min((len(f.t_s) for f in v.caches), default=0)
    if not n:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return (np.mean([f.t_s[:n] for f in v.caches], axis=0),
            np.sum([f.kernel_pages[:n] for f in v.caches], axis=0),
            np.sum([f.model_pages[:n] for f in v.caches], axis=0))


def _settled_and_moved(v: Validation) -> tuple[ErrorStats, ErrorStats, int]:
    late, moved, n = [], [], 0
    for f in v.caches:
        err = pct_error(f.model_pages, f.kernel_pages)
        late.append(err[f.t_s >= SETTLE_S])
        k0 = max(int(f.kernel_pages[0]), 1)
        if np.max(np.abs(f.kernel_pages - f.kernel_pages[0])) * 100 >= MOVED_PCT * k0:
            moved.append(err[1:])
            n += 1
    return ErrorStats.of(_cat(late)), ErrorStats.of(_cat(moved)), n


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def _event_ends(trace: TraceReader) -> np.ndarray:
    """Per cache id, what the trace shows of its objects' lives: ``[allocs, frees naming
    it, traced frees, implied frees, implied allocs]``. An ALLOC's object ends in a traced
    free when the next event of its address is a FREE (whatever cache that FREE names:
    ``kfree`` names none), in an implied free when it is another ALLOC (the kernel never
    hands out a live object twice: the free reached no BPF program); a FREE followed by a
    FREE of the same address implies an allocation no BPF program saw, counted on the
    cache the FREE names. Rows are in event order, so a stable sort by address keeps each
    address's history in order."""
    n = len(trace.caches) + 1
    ptrs, kinds, caches = [], [], []
    for cols in trace.iter_parts(["kind", "ptr", "cache_id"]):
        sel = (cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.FREE)
        ptrs.append(cols["ptr"][sel])
        kinds.append(cols["kind"][sel])
        caches.append(cols["cache_id"][sel].astype(np.int64))
    out = np.zeros((5, n), np.int64)
    if not ptrs:
        return out
    order = np.argsort(np.concatenate(ptrs), kind="stable")
    ptr = np.concatenate(ptrs)[order]
    kind, cache = np.concatenate(kinds)[order], np.concatenate(caches)[order]
    cache = np.where((cache >= 0) & (cache < n), cache, n - 1)  # n - 1: no cache named
    alloc, free = kind == EventKind.ALLOC, kind == EventKind.FREE
    same = np.r_[ptr[1:] == ptr[:-1], False]
    nxt_free = same & np.r_[free[1:], False]
    nxt_alloc = same & np.r_[alloc[1:], False]
    for row, sel in enumerate((alloc, free, alloc & nxt_free, alloc & nxt_alloc,
                               free & nxt_free)):
        out[row] = np.bincount(cache[sel], minlength=n)
    return out


def live_over_kernel(trace: TraceReader) -> dict[int, tuple[int, int, float]]:
    """cache id -> (objects the trace shows live, the kernel's ``objects``, seconds) at the
    sample where the first exceeds the second most, for the caches where it ever does.

    ``objects`` in /sys/kernel/slab is an upper bound on a cache's live objects (it counts
    every slot of the slabs the CPUs hold as used: ``show_slab_objects``), and the trace's
    own objects are a lower bound on them if every free reaches the trace: an object
    counts live from its ALLOC to the FREE of its address; one whose address is allocated
    again with no FREE between (an implied free, :func:`_event_ends`) counts live not at
    all, as if freed at once. Objects alive before the recording are not counted. So a
    trace that holds more live objects than the kernel's ``objects`` proves frees went
    missing (``kfree_rcu`` batches through ``kfree_bulk``, which no tracepoint reports:
    ``kmalloc-cg-96`` in a churn run, 698 traced-live objects where the kernel had room
    for 210). The sample-timing slack: the trace's count is taken at its lowest within
    the span a sample's reads may have taken (``whatif.OWN_SPAN_S``, or a round's
    ``SAMPLE_SPAN_S`` for traces stamped once a round)."""
    ts, kind, ptr, cache, objs = [], [], [], [], []
    for cols in trace.iter_parts(["ts_ns", "kind", "ptr", "cache_id", "aux2"]):
        sel = np.isin(cols["kind"], (EventKind.ALLOC, EventKind.FREE, EventKind.SLAB_SAMPLE))
        ts.append(cols["ts_ns"][sel])
        kind.append(cols["kind"][sel])
        ptr.append(cols["ptr"][sel].astype(np.uint64))
        cache.append(cols["cache_id"][sel].astype(np.int64))
        objs.append(cols["aux2"][sel].astype(np.int64))
    ts, kind, ptr, cache, objs = (_cat(x) for x in (ts, kind, ptr, cache, objs))
    sample = kind == EventKind.SLAB_SAMPLE
    ev = np.flatnonzero((kind == EventKind.ALLOC) | (kind == EventKind.FREE))
    by_ptr = ev[np.argsort(ptr[ev], kind="stable")]
    alloc = kind[by_ptr] == EventKind.ALLOC
    nxt_same = np.r_[ptr[by_ptr][1:] == ptr[by_ptr][:-1], False]
    nxt_free = nxt_same & np.r_[kind[by_ptr][1:] == EventKind.FREE, False]
    # each ALLOC: +1 at its time, -1 at its FREE's (counted on the ALLOC's cache: a
    # ``kfree`` names none); an implied free's life is not counted
    born = by_ptr[alloc & (nxt_free | ~nxt_same)]
    died = np.r_[by_ptr[1:], 0][alloc & nxt_free]
    c_born, c_died = cache[born], cache[by_ptr[alloc & nxt_free]]
    span = int((whatif.OWN_SPAN_S if whatif.own_stamps(ts[sample]) else whatif.SAMPLE_SPAN_S)
               * 1e9)
    out: dict[int, tuple[int, int, float]] = {}
    for c in np.unique(cache[sample]):
        t = np.r_[ts[born[c_born == c]], ts[died[c_died == c]]]
        step = np.r_[np.ones(int((c_born == c).sum()), np.int64),
                     -np.ones(int((c_died == c).sum()), np.int64)]
        if not len(t):
            continue
        order = np.argsort(t, kind="stable")
        t, n = t[order], np.cumsum(step[order])  # live after each step
        at = np.flatnonzero(sample & (cache == c))
        lo = np.searchsorted(t, ts[at] - span)  # live at ts - span: before index lo
        hi = np.searchsorted(t, ts[at] + span, "right")
        low = np.array([min(n[a:b].min() if b > a else 1 << 62, n[a - 1] if a else 0)
                        for a, b in zip(lo, hi, strict=True)])
        excess = low - objs[at]
        i = int(np.argmax(excess))
        if excess[i] > 0:
            out[int(c)] = (int(low[i]), int(objs[at[i]]), float((ts[at[i]] - trace.start_ns) / 1e9))
    return out


def slabs_over_allocs(trace: TraceReader) -> dict[int, tuple[int, int, float]]:
    """cache id -> (slabs the kernel gained between two of its samples, the cache's traced
    allocations between them, seconds at the later one) where the first exceeds the second
    most, for the caches where it ever does.

    A slab is made only for an allocation (``allocate_slab()`` is reached from the
    allocation paths alone in mm/slub.c), so slabs gained beyond the allocations the trace
    holds prove allocations that reached no program: ``pde_opener`` on the recording
    kernel gets a CPU slab, empty, with no ``kmem_cache_alloc`` event for it (an ftrace
    instance filtered on its name saw none in the 12 of 40 tries where a shrunk
    ``pde_opener`` had a slab again 0.3 s later, this machine at rest), and the kmalloc
    tracepoint names no cache, so the recorder files a ``memdup_user-8`` allocation (a
    ``kmem_buckets`` cache, 6.11 on) under ``kmalloc-8`` by its size. Allocations are
    counted within the span a sample's reads may take on either side
    (:data:`kmemtrace.replay.whatif.OWN_SPAN_S`, or a round's span)."""
    ts, kind, cache, slabs = [], [], [], []
    for cols in trace.iter_parts(["ts_ns", "kind", "cache_id", "aux"]):
        sel = (cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.SLAB_SAMPLE)
        ts.append(cols["ts_ns"][sel])
        kind.append(cols["kind"][sel])
        cache.append(cols["cache_id"][sel].astype(np.int64))
        slabs.append(cols["aux"][sel].astype(np.int64))
    ts, kind, cache, slabs = (_cat(x) for x in (ts, kind, cache, slabs))
    sample = kind == EventKind.SLAB_SAMPLE
    span = int((whatif.OWN_SPAN_S if whatif.own_stamps(ts[sample]) else whatif.SAMPLE_SPAN_S)
               * 1e9)
    out: dict[int, tuple[int, int, float]] = {}
    for c in np.unique(cache[sample]):
        at = np.flatnonzero(sample & (cache == c))
        if len(at) < 2:
            continue
        t_alloc = ts[~sample & (cache == c)]
        gained = np.diff(slabs[at])
        allocs = (np.searchsorted(t_alloc, ts[at[1:]] + span, "right")
                  - np.searchsorted(t_alloc, ts[at[:-1]] - span))
        i = int(np.argmax(gained - allocs))
        if gained[i] > allocs[i]:
            out[int(c)] = (int(gained[i]), int(allocs[i]),
                           float((ts[at[i + 1]] - trace.start_ns) / 1e9))
    return out


def untraced(ends: np.ndarray, cache_id: int,
             over: tuple[int, int, float] | None = None, missed: int = 0,
             gained: tuple[int, int, float] | None = None) -> str | None:
    """Why the model cannot follow this cache on the recording kernel, or None: its frees
    or allocations mostly reach no BPF program (docs/recording.md, "Frees no probe sees";
    on 6.18 ``kmem_cache_free_bulk``, ``kfree_bulk`` and SLUB sheaves' RCU frees have no
    tracepoint, and kprobes are off), the trace holds more of its objects live than the
    kernel's ``objects`` at some sample (``over``, :func:`live_over_kernel`: frees provably
    went missing, however few the implied ones), the kernel's own samples prove more
    objects live at the start than later samples leave room for (``missed``,
    :func:`kmemtrace.replay.whatif.unseen_frees`: frees of objects older than the
    recording, which no implied free can show), the kernel's slabs grew by more than its
    traced allocations between two samples (``gained``, :func:`slabs_over_allocs`), or
    nothing of it reached the trace at all. Such a cache is scored and listed, but its
    error is the recorder's blind spot, not the model's: the worst per cache is given over
    the others too."""
    allocs, named, traced, implied, implied_allocs = (int(x) for x in ends[:, cache_id])
    if not allocs and not named:
        return "no allocation or free of it reached a tracepoint"
    if implied and implied >= traced:
        return "its frees mostly reach no tracepoint"
    if implied_allocs and implied_allocs >= allocs:
        return "its allocations mostly reach no BPF program"
    if over is not None:
        return LIVE_OVER
    if missed:
        return UNSEEN
    if gained is not None:
        return UNSEEN_ALLOCS
    return None


def _worst(v: Validation, ends: np.ndarray, over: dict, missed: dict, gained: dict
           ) -> list[dict]:
    """The worst caches, with what the trace holds for them: allocations, frees that named
    the cache, how their objects' lives ended (:func:`_event_ends`), whether the model can
    follow them (:func:`untraced`; ``live_over``: the trace's live objects against the
    kernel's ``objects`` where they exceed it most, :func:`live_over_kernel`), and the
    kernel's and the model's pages where the error was worst."""
    fits = sorted((f for f in v.caches if f.raw.worst_pct is not None),
                  key=lambda f: -abs(f.raw.worst_pct))[:WORST_LISTED]
    out = []
    for f in fits:
        i = int(np.argmax(np.abs(pct_error(f.model_pages, f.kernel_pages))))
        e = ends[:, f.cache_id]
        out.append({"cache": f.name, "merged": len(f.merged_with), "worst_pct": f.raw.worst_pct,
                    "median_pct": f.raw.median_pct, "t_s": float(f.t_s[i]),
                    "kernel_pages": int(f.kernel_pages[i]), "model_pages": int(f.model_pages[i]),
                    "kernel_pages_start": int(f.kernel_pages[0]),
                    "allocs": int(e[0]), "frees": int(e[1]), "frees_traced": int(e[2]),
                    "frees_implied": int(e[3]), "allocs_implied": int(e[4]),
                    "untraced": untraced(ends, f.cache_id, over.get(f.cache_id),
                                         missed.get(f.cache_id, 0), gained.get(f.cache_id)),
                    "live_over": over.get(f.cache_id), "missed": missed.get(f.cache_id, 0),
                    "gained": gained.get(f.cache_id)})
    return out


def _traced_worst(v: Validation, ends: np.ndarray, over: dict, missed: dict, gained: dict
                  ) -> tuple[float | None, str, list[dict]]:
    """(worst raw error over the caches the model can follow, that cache, the excluded
    caches with their error and reason)."""
    kept, excluded = [], []
    for f in v.caches:
        if f.raw.worst_pct is None:
            continue
        why = untraced(ends, f.cache_id, over.get(f.cache_id), missed.get(f.cache_id, 0),
                       gained.get(f.cache_id))
        if why is None:
            kept.append(f)
        else:
            excluded.append({"cache": f.name, "worst_pct": f.raw.worst_pct, "why": why,
                             "allocs": int(ends[0, f.cache_id]),
                             "frees_traced": int(ends[2, f.cache_id]),
                             "frees_implied": int(ends[3, f.cache_id]),
                             "allocs_implied": int(ends[4, f.cache_id]),
                             "live_over": over.get(f.cache_id),
                             "missed": missed.get(f.cache_id, 0),
                             "gained": gained.get(f.cache_id)})
    top = max(kept, key=lambda f: abs(f.raw.worst_pct), default=None)
    excluded.sort(key=lambda x: -abs(x["worst_pct"]))
    return (top.raw.worst_pct if top else None), (top.name if top else ""), excluded


def _over_target(v: Validation, excluded: set[str], caches: list[dict]) -> list[dict]:
    """The traced cache fits whose worst raw error misses the target, each with its worst
    sample (the kernel's and the model's pages), its slab's pages, the most whole slabs
    the model was off at any sample, and how many samples missed: a percentage alone
    does not tell a cache of 3 slabs one slab off (33 %) from a drift."""
    pages = {int(c["id"]): 1 << int(c.get("order", 0)) for c in caches}
    out = []
    for f in v.caches:
        if (f.raw.worst_pct is None or f.name in excluded
                or abs(f.raw.worst_pct) <= TARGET_WORST_PCT):
            continue
        err = np.abs(pct_error(f.model_pages, f.kernel_pages))
        i = int(np.nanargmax(err))
        slab = pages.get(f.cache_id, 1)
        off = np.abs(f.model_pages.astype(np.int64) - f.kernel_pages.astype(np.int64))
        out.append({"cache": f.name, "worst_pct": f.raw.worst_pct, "t_s": float(f.t_s[i]),
                    "kernel_pages": int(f.kernel_pages[i]), "model_pages": int(f.model_pages[i]),
                    "slab_pages": slab, "most_slabs_off": -(-int(off.max()) // slab),
                    "samples_over": int((err > TARGET_WORST_PCT).sum()), "samples": len(err)})
    out.sort(key=lambda x: -abs(x["worst_pct"]))
    return out


def _dying(spec: TraceSpec, trace: TraceReader, result, run) -> pd.DataFrame | None:
    """Model against kernel (analyses/which_way/dying.py): the columns the report plots
    (``t_s``; ``kernel``: the v1 count's change since start; ``model``, ``model_pc``: the
    slab-only model's and the model's with page cache, each with the baseline's own
    releases taken off) and the per-memcg ones (``kernel_rows``, ``model_rows``);
    ``attrs["classes"]``: the offlined memcgs by outcome; ``attrs["page_cache"]``: the
    trace recorded page cache."""
    fit = dying_fit(trace, result, run, truth_path(spec.path))
    d = fit.over_time
    if "kernel" not in d:
        return None
    if not fit.page_cache:  # the report's model_pc is NaN without page-cache records
        d["model_pc"] = np.nan
    d.attrs.update(classes=fit.classes(), page_cache=fit.page_cache,
                   baseline_start=fit.baseline_start, baseline_released=fit.baseline_released)
    return d


def calibrate(specs: list[TraceSpec]) -> list[Calibration]:
    """Every trace that carries /sys/kernel/slab samples (others cannot be calibrated);
    traces in parallel processes."""
    return [c for c in pmap(_calibrate_one, specs) if c is not None]


def _calibrate_one(spec: TraceSpec) -> Calibration | None:
    return cached("calibration", spec, CACHE_KEY, lambda: _calibration(spec))


def _calibration(spec: TraceSpec) -> Calibration | None:
    trace = TraceReader.open(spec.path)
    if not trace.meta.get("counts", {}).get("SLAB_SAMPLE"):
        return None
    v, result, run = _validation(trace, seeded=True)
    if not v.caches:
        return None
    # what the start state buys is shown once per workload (a replay more per trace)
    empty = _validation(trace, seeded=False)[0].raw if spec.run == 0 else ErrorStats.of(
        np.zeros(0))
    t, kernel, model = _raw_totals(v)
    settled, moved, n_moved = _settled_and_moved(v)
    ends, over, missed = _event_ends(trace), live_over_kernel(trace), whatif.unseen_frees(trace)
    gained = slabs_over_allocs(trace)
    traced = _traced_worst(v, ends, over, missed, gained)
    return Calibration(spec.group, spec.run, v, empty, t, kernel, model,
                       _dying(spec, trace, result, run), settled, moved, n_moved,
                       _worst(v, ends, over, missed, gained), *traced,
                       _over_target(v, {x["cache"] for x in traced[2]}, trace.caches),
                       Sampling.of(trace))
