"""BPF slab records (``struct kmt_event``) to trace columns, a whole drained span at once.

Every step is one numpy pass over the span: the kind is a table lookup, the cache id a
gather through the BPF-index -> cache-id table, and a kmalloc's cache (the tracepoint has no
cache pointer) a binary search of its size among the kmalloc caches of its family. The
drain loop runs this for every event the recorder sees, so what it costs per event is paid
by the recorded workload on a busy machine.
"""

import numpy as np

from kmemtrace.record.events import K
from kmemtrace.trace.schema import GFP_ACCOUNT, EventKind

# BPF kind (bits 24..27 of size_kind) -> EventKind; 0 for none
KIND_TABLE = np.zeros(K["KMT_KIND_MASK"] + 1, np.uint8)
KIND_TABLE[K["KMT_K_ALLOC"]] = KIND_TABLE[K["KMT_K_KMALLOC"]] = EventKind.ALLOC
KIND_TABLE[K["KMT_K_FREE"]] = EventKind.FREE
KIND_TABLE[K["KMT_K_CACHE_CREATE"]] = EventKind.CACHE_CREATE
KIND_TABLE[K["KMT_K_CACHE_DESTROY"]] = EventKind.CACHE_DESTROY


class KmallocIds:
    """kmalloc-cg-<n> for __GFP_ACCOUNT, else kmalloc-<n>, by object size; -1 for none
    (kmalloc_large). ``families`` maps accounted (bool) -> {object size: cache id}."""

    def __init__(self, families: dict[bool, dict[int, int]]):
        self.tables = {}
        for accounted, table in families.items():
            sizes = np.array(sorted(table), np.int64)
            self.tables[accounted] = (sizes, np.array([table[s] for s in sizes], np.int32))

    def __call__(self, size: np.ndarray, gfp: np.ndarray) -> np.ndarray:
        out = np.full(len(size), -1, np.int32)
        acct = (gfp & GFP_ACCOUNT) != 0
        for accounted, (sizes, ids) in self.tables.items():
            sel = np.flatnonzero(acct == accounted)
            if not len(sel) or not len(sizes):
                continue
            want = size[sel]
            pos = np.minimum(np.searchsorted(sizes, want), len(sizes) - 1)
            hit = sizes[pos] == want
            out[sel[hit]] = ids[pos[hit]]
        return out


def columns(recs: np.ndarray, xlate: np.ndarray, kmalloc_ids: KmallocIds) -> dict:
    """Trace columns (all but ``seq``) of ``recs``, 1-D, each a fresh array. ``recs`` may be
    a 1-D event array or a (batches x KMT_BATCH) view of the ring itself, decoded in place
    (every column is computed in that shape, then flattened: a view of a fresh array).
    ``xlate[i]`` is the cache id of BPF cache index i (-1 unknown); indices past its end are
    unknown too."""
    size_kind = recs["size_kind"]
    raw_kind = (size_kind >> K["KMT_KIND_SHIFT"]) & K["KMT_KIND_MASK"]
    size = (size_kind & K["KMT_SIZE_MASK"]).astype(np.int32)
    idx = recs["cache_idx"]
    if idx.max(initial=0) < len(xlate):
        cache_id = xlate[idx]
    else:
        known = idx < len(xlate)
        cache_id = np.full(idx.shape, -1, np.int32)
        cache_id[known] = xlate[idx[known]]
    kmalloc = raw_kind == K["KMT_K_KMALLOC"]
    if kmalloc.any():
        cache_id[kmalloc] = kmalloc_ids(size[kmalloc], recs["gfp"][kmalloc])
    cols = {
        "ts_ns": recs["ts_ns"].astype(np.int64),
        "cpu": recs["cpu"].astype(np.int32),
        "kind": KIND_TABLE[raw_kind],
        "ptr": recs["ptr"].copy(),
        "cache_id": cache_id,
        "memcg_id": recs["memcg_id"].copy(),
        "bytes": size,
        "pid": recs["pid"].astype(np.int32),
        "gfp": recs["gfp"].copy(),
        "ctx": (size_kind >> K["KMT_CTX_SHIFT"]).astype(np.uint8),
    }
    cols = {name: col.reshape(-1) for name, col in cols.items()}
    n = len(cols["ts_ns"])
    cols["aux"] = np.zeros(n, np.int64)
    cols["aux2"] = np.zeros(n, np.int64)
    return cols
