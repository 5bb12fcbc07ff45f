"""What a trace holds, as one plain dict: for ``kmemtrace info`` and for scripts (``--json``).

Most of it is meta.json; memcg lifecycle counts and implied frees come from the parts,
because meta.json only holds the cgroup tree at the start of a recording and cannot know
which frees the recorder missed.
"""

import numpy as np

from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import EventKind

_LIFECYCLE = (EventKind.MEMCG_MKDIR, EventKind.MEMCG_OFFLINE, EventKind.MEMCG_RELEASE)


def memcg_lifecycle(reader: TraceReader) -> dict[str, int]:
    """Distinct memcgs known (listed in meta.json or mkdir'ed), offlined and released."""
    seen = {kind: [] for kind in _LIFECYCLE}
    for cols in reader.iter_parts(columns=["kind", "memcg_id"]):
        for kind in _LIFECYCLE:
            seen[kind].append(cols["memcg_id"][cols["kind"] == kind])
    ids = {kind: np.unique(np.concatenate(seen[kind] or [np.zeros(0, np.uint64)]))
           for kind in _LIFECYCLE}
    in_meta = np.array([m["id"] for m in reader.meta.get("memcgs", [])], dtype=np.uint64)
    return {
        "known": len(np.union1d(in_meta, ids[EventKind.MEMCG_MKDIR])),
        "in_meta": len(in_meta),
        "created": len(ids[EventKind.MEMCG_MKDIR]),
        "offlined": len(ids[EventKind.MEMCG_OFFLINE]),
        "released": len(ids[EventKind.MEMCG_RELEASE]),
    }


def implied_frees(reader: TraceReader) -> dict:
    """ALLOCs of an address that was still live in the trace: each implies a missed FREE.

    The kernel never hands out a live object twice, so an ALLOC of a pointer whose previous
    ALLOC has no FREE in between means the trace lost (or never saw) that FREE; replay would
    count the object as leaked. Counted per cache of the earlier ALLOC (the one left live).
    Parts are sorted by (ts_ns, seq) and do not overlap, so file order is event order and a
    stable sort by pointer keeps it within each pointer (13 bytes a row in memory).
    """
    keep = (EventKind.ALLOC, EventKind.FREE)
    chunks = {c: [] for c in ("ptr", "kind", "cache_id")}
    for cols in reader.iter_parts(columns=list(chunks)):
        sel = np.isin(cols["kind"], keep)
        for c in chunks:
            chunks[c].append(cols[c][sel])
    if not any(len(a) for a in chunks["ptr"]):
        return {"total": 0, "by_cache": {}}
    col = {c: np.concatenate(v) for c, v in chunks.items()}
    order = np.argsort(col["ptr"], kind="stable")
    ptr, kind, cache = col["ptr"][order], col["kind"][order], col["cache_id"][order]
    again = ((kind[1:] == EventKind.ALLOC) & (kind[:-1] == EventKind.ALLOC)
             & (ptr[1:] == ptr[:-1]))
    names = {c["id"]: c["name"] for c in reader.caches}
    ids, counts = np.unique(cache[:-1][again], return_counts=True)
    by_cache = {names.get(int(i), "unknown"): int(n)
                for i, n in sorted(zip(ids, counts, strict=True), key=lambda x: -x[1])}
    return {"total": int(again.sum()), "by_cache": by_cache}


def summarize(reader: TraceReader) -> dict:
    """The facts ``kmemtrace info`` shows, JSON-serialisable."""
    meta = reader.meta
    parts = meta.get("parts", [])
    counts = {k: v for k, v in meta.get("counts", {}).items() if v}
    return {
        "path": str(reader.path),
        "format_version": meta["format_version"],
        "complete": bool(meta.get("complete")),
        "write_error": meta.get("write_error"),
        "source": meta.get("source"),
        "workload": meta.get("workload"),
        "created_utc": meta.get("created_utc"),
        "host": meta.get("host"),
        "command": meta.get("command", []),
        "kernel": meta.get("kernel", {}),
        "ncpus": meta.get("ncpus"),
        "attach_plan": meta.get("attach_plan", []),
        "events": reader.n_events,
        "counts": counts,
        "lost": meta.get("lost", {"total": 0, "by_reason": {}}),
        "late_events": int(meta.get("late_events", 0)),
        "implied_frees": implied_frees(reader),
        "caches": meta.get("caches", []),
        "memcgs": memcg_lifecycle(reader),
        "clock": {"start_ns": reader.start_ns, "end_ns": reader.end_ns,
                  "span_s": (reader.end_ns - reader.start_ns) / 1e9},
        "parts": {"count": len(parts), "bytes": sum(p.get("bytes", 0) for p in parts)},
    }
