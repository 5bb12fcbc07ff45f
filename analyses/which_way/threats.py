"""Measured sizes for the threats to validity, one pass over each trace.

Each figure answers "how much could this bias the result?" with a count from the trace
itself: how many objects existed before the recording, how many frees it could not pair,
how many events the recorder lost and why, how much of the traffic was memcg-accounted,
how much ran in interrupt context, and how many of the memcgs (and of the allocations
charged to a memcg other than the root) were ours.
"""

import numpy as np
import pandas as pd

from analyses.which_way.record import PREFIX
from analyses.which_way.sweep import TraceSpec, pmap
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import (
    GFP_ACCOUNT,
    ROOT_MEMCG_ID,
    EventContext,
    EventKind,
    LostReason,
)

INTERRUPT = [EventContext.SOFTIRQ, EventContext.HARDIRQ, EventContext.NMI]


def trace_facts(spec: TraceSpec) -> dict:
    trace = TraceReader.open(spec.path)
    accounted_cache = {c["id"] for c in trace.caches if c.get("accounted")}
    ours = [int(m["id"]) for m in trace.meta.get("memcgs", []) if PREFIX in m["path"]]
    allocs = frees = accounted = free_irq = alloc_irq = mine = others = 0
    first_objects = {}
    for cols in trace.iter_parts(["kind", "gfp", "ctx", "cache_id", "aux2", "memcg_id"]):
        kind = cols["kind"]
        a, f = kind == EventKind.ALLOC, kind == EventKind.FREE
        memcg = cols["memcg_id"].astype(np.int64)
        is_ours = np.isin(memcg, ours)
        mine += int((a & is_ours).sum())
        others += int((a & ~is_ours & (memcg != ROOT_MEMCG_ID) & (memcg != 0)).sum())
        irq = np.isin(cols["ctx"], INTERRUPT)
        allocs += int(a.sum())
        frees += int(f.sum())
        acc = ((cols["gfp"] & GFP_ACCOUNT) != 0) | np.isin(cols["cache_id"], list(
            accounted_cache))
        accounted += int((a & acc).sum())
        alloc_irq += int((a & irq).sum())
        free_irq += int((f & irq).sum())
        s = np.flatnonzero(kind == EventKind.SLAB_SAMPLE)
        for i in s:
            first_objects.setdefault(int(cols["cache_id"][i]), int(cols["aux2"][i]))
    lost = trace.meta.get("lost", {})
    by_reason = lost.get("by_reason", {}) if isinstance(lost, dict) else {}
    paths = [m["path"] for m in trace.meta.get("memcgs", [])]
    return {
        "group": spec.group, "run": spec.run, "events": allocs + frees,
        "accounted_pct": 100 * accounted / max(allocs, 1),
        "alloc_irq_pct": 100 * alloc_irq / max(allocs, 1),
        "free_irq_pct": 100 * free_irq / max(frees, 1),
        "objects_at_start": sum(first_objects.values()),
        "lost_total": int(lost.get("total", 0)) if isinstance(lost, dict) else 0,
        "lost_nested": int(by_reason.get(LostReason.NESTED.name, 0)),
        "lost_free_unseen": int(by_reason.get(LostReason.FREE_UNSEEN.name, 0)),
        "allocs_ours_pct": 100 * mine / max(allocs, 1),
        "allocs_others_pct": 100 * others / max(allocs, 1),
        "memcgs": len(paths),
        "memcgs_ours": sum(1 for p in paths if PREFIX in p),
        "pressure_rows": int(trace.meta.get("counts", {}).get("PRESSURE", 0)),
        "load": spec.load,
    }


def survivors(spec: TraceSpec) -> dict:
    """Objects our job memcgs allocated that were still live when their memcg went offline,
    and when the kernel freed them: the lifetimes the study rests on, none set by us."""
    trace = TraceReader.open(spec.path)
    ours = {int(m["id"]) for m in trace.meta.get("memcgs", []) if PREFIX in m["path"]}
    df = trace.to_pandas([EventKind.ALLOC, EventKind.FREE, EventKind.MEMCG_OFFLINE,
                          EventKind.PRESSURE])
    offline = df[(df.kind == EventKind.MEMCG_OFFLINE) & df.memcg_id.isin(ours)]
    off_at = offline.groupby("memcg_id").ts_ns.min()
    allocs = df[(df.kind == EventKind.ALLOC) & df.memcg_id.isin(off_at.index)]
    frees = df[df.kind == EventKind.FREE][["ts_ns", "ptr"]].rename(columns={"ts_ns": "freed"})
    allocs = allocs.sort_values("ts_ns")
    frees = frees.sort_values("freed")
    paired = pd.merge_asof(allocs, frees, left_on="ts_ns", right_on="freed", by="ptr",
                           direction="forward", allow_exact_matches=False)
    paired["offline"] = paired.memcg_id.map(off_at)
    alive = paired[~(paired.freed < paired.offline)]  # still live at its memcg's offline
    pressure = df[df.kind == EventKind.PRESSURE].ts_ns
    first_p = pressure.min() if len(pressure) else np.inf
    after = alive.freed.notna()
    life = (alive.freed[after] - alive.offline[after]) / 1e9
    return {"group": spec.group, "run": spec.run, "survivors": len(alive),
            "freed_in_trace_pct": 100 * float(after.mean()) if len(alive) else np.nan,
            "freed_after_pressure_pct": 100 * float((alive.freed >= first_p).mean())
            if len(alive) else np.nan,
            "p50_after_offline_s": float(life.median()) if len(life) else np.nan}


def facts(specs: list[TraceSpec]) -> pd.DataFrame:
    """One row per recorded trace; traces in parallel processes."""
    return pd.DataFrame(pmap(_facts_one, [s for s in specs if s.source != "synthetic"]))


def _facts_one(spec: TraceSpec) -> dict:
    return trace_facts(spec) | survivors(spec)
