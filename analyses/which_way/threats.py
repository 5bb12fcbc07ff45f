"""Measured sizes for the threats to validity, one pass over each trace.

Each figure answers "how much could this bias the result?" with a count from the trace
itself: how many objects existed before the recording, how many frees it could not pair,
how many events the recorder lost and why, how much of the traffic was memcg-accounted,
how much ran in interrupt context, and how many of the memcgs were ours.
"""

import numpy as np
import pandas as pd

from analyses.which_way.record import PREFIX
from analyses.which_way.sweep import TraceSpec
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import GFP_ACCOUNT, EventContext, EventKind, LostReason

INTERRUPT = [EventContext.SOFTIRQ, EventContext.HARDIRQ, EventContext.NMI]


def trace_facts(spec: TraceSpec) -> dict:
    trace = TraceReader.open(spec.path)
    accounted_cache = {c["id"] for c in trace.caches if c.get("accounted")}
    allocs = frees = accounted = free_irq = alloc_irq = 0
    first_objects = {}
    for cols in trace.iter_parts(["kind", "gfp", "ctx", "cache_id", "aux2"]):
        kind = cols["kind"]
        a, f = kind == EventKind.ALLOC, kind == EventKind.FREE
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
        "memcgs": len(paths),
        "memcgs_ours": sum(1 for p in paths if PREFIX in p),
        "pressure_rows": int(trace.meta.get("counts", {}).get("PRESSURE", 0)),
        "load": spec.load,
    }


def facts(specs: list[TraceSpec]) -> pd.DataFrame:
    return pd.DataFrame([trace_facts(s) for s in specs if s.source != "synthetic"])
