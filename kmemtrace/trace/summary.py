"""What a trace holds, as one plain dict: for ``kmemtrace info`` and for scripts (``--json``).

Most of it is meta.json; memcg lifecycle counts and implied frees come from the parts,
because meta.json only holds the cgroup tree at the start of a recording and cannot know
which frees the recorder missed.
"""

import numpy as np

from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import ROOT_MEMCG_ID, EventKind

_LIFECYCLE = (EventKind.MEMCG_MKDIR, EventKind.MEMCG_OFFLINE, EventKind.MEMCG_RELEASE)


def memcg_lifecycle(reader: TraceReader) -> dict[str, int]:
    """Distinct memcgs known, offlined and released: ``info`` and ``replay`` both count here.

    "known" is every memcg the trace names in meta.json or in a life-cycle row (a memcg seen
    only going offline still existed), without the root, which is never charged. A trace
    that lost MKDIRs therefore shows more memcgs known than created, never two totals.
    ``in_meta`` likewise leaves the root out.
    """
    seen = {kind: [] for kind in _LIFECYCLE}
    for cols in reader.iter_parts(columns=["kind", "memcg_id"]):
        for kind in _LIFECYCLE:
            seen[kind].append(cols["memcg_id"][cols["kind"] == kind])
    ids = {kind: np.unique(np.concatenate(seen[kind] or [np.zeros(0, np.uint64)]))
           for kind in _LIFECYCLE}
    in_meta = np.array([m["id"] for m in reader.meta.get("memcgs", [])], dtype=np.uint64)
    in_meta = np.setdiff1d(in_meta, np.array([0, ROOT_MEMCG_ID], np.uint64))
    known = in_meta
    for kind in _LIFECYCLE:
        known = np.union1d(known, ids[kind])
    known = np.setdiff1d(known, np.array([0, ROOT_MEMCG_ID], np.uint64))
    return {
        "known": len(known),
        "in_meta": len(in_meta),
        "created": len(ids[EventKind.MEMCG_MKDIR]),
        "offlined": len(ids[EventKind.MEMCG_OFFLINE]),
        "released": len(ids[EventKind.MEMCG_RELEASE]),
    }


def memcg_stages(reader: TraceReader) -> dict[str, list[int]]:
    """The memcg ids with each life-cycle event, by kind name (for the paths ``info`` lists)."""
    seen = {kind: [] for kind in _LIFECYCLE}
    for cols in reader.iter_parts(columns=["kind", "memcg_id"]):
        for kind in _LIFECYCLE:
            seen[kind].append(cols["memcg_id"][cols["kind"] == kind])
    return {kind.name: np.unique(np.concatenate(seen[kind] or [np.zeros(0, np.uint64)]))
            .tolist() for kind in _LIFECYCLE}


def cache_events(reader: TraceReader) -> dict[int, dict[str, int]]:
    """ALLOC and FREE rows per cache id (-1: unknown), for caches that have any."""
    n_caches = len(reader.caches)
    allocs = np.zeros(n_caches + 1, dtype=np.int64)  # the last slot: unknown cache (-1)
    frees = np.zeros(n_caches + 1, dtype=np.int64)
    for cols in reader.iter_parts(columns=["kind", "cache_id"]):
        slot = np.where(cols["cache_id"] < 0, n_caches, cols["cache_id"])
        allocs += np.bincount(slot[cols["kind"] == EventKind.ALLOC], minlength=n_caches + 1)
        frees += np.bincount(slot[cols["kind"] == EventKind.FREE], minlength=n_caches + 1)
    out = {-1 if cid == n_caches else cid: {"allocs": int(allocs[cid]), "frees": int(frees[cid])}
           for cid in range(n_caches + 1) if allocs[cid] or frees[cid]}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["allocs"]))


def _memcg_paths(memcgs: list[dict], stages: dict[str, list[int]]) -> list[dict]:
    """Each memcg the trace knows, with its path and which life-cycle events it had."""
    by_id = {int(m["id"]): m for m in memcgs}
    ids = sorted(set(by_id) | {i for v in stages.values() for i in v})
    staged = {stage: set(v) for stage, v in stages.items()}
    return [{"id": i, "path": by_id.get(i, {}).get("path"),
             "events": [s for s in ("MEMCG_MKDIR", "MEMCG_OFFLINE", "MEMCG_RELEASE")
                        if i in staged[s]]} for i in ids]


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
        "record": meta.get("record", {}),
        "events": reader.n_events,
        "counts": counts,
        "lost": meta.get("lost", {"total": 0, "by_reason": {}}),
        "late_events": int(meta.get("late_events", 0)),
        "implied_frees": implied_frees(reader),
        "caches": meta.get("caches", []),
        "memcgs": memcg_lifecycle(reader),
        "memcg_paths": _memcg_paths(meta["memcgs"], memcg_stages(reader)),
        "cache_events": {str(cid): n for cid, n in cache_events(reader).items()},
        "early_events_ns": reader.early_events_ns,
        "warnings": reader.warnings(),
        "clock": {"start_ns": reader.start_ns, "end_ns": reader.end_ns,
                  "span_s": (reader.end_ns - reader.start_ns) / 1e9},
        "parts": {"count": len(parts), "bytes": sum(p.get("bytes", 0) for p in parts)},
    }
