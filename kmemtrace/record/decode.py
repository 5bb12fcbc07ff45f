"""BPF slab records (``struct kmt_event``) to trace columns, a whole drained span at once.

Every step is one numpy pass over the span, written into columns that already exist: the
kind is a table lookup, the cache id a gather through the BPF-index -> cache-id table, and
a kmalloc's cache (the tracepoint has no cache pointer) a gather from a table indexed by
object size and accounting. The drain loop runs this for every event the recorder sees,
so what it costs per event is paid by the recorded workload on a busy machine.

Why into existing columns (:class:`ColumnChunk`, recycled by :class:`ChunkPool`): the
passes themselves cost ~0.5 ns per event and column, but each fresh column of a
~45 000-event span is fresh memory, and faulting it in cost 2.5-5.7 ns per event and
column (a 45 000-event span of `slab_hammer mix` shape: 58 ns per event decoded into fresh
arrays, with kmalloc's boolean-indexed temporaries 23 of them). A chunk goes back to the
pool once the writer has copied its rows (``WriterThread.put(..., release=)``).
"""

import threading

import numpy as np

from kmemtrace.record.events import K
from kmemtrace.trace.schema import COLUMNS, GFP_ACCOUNT, GFP_DMA, GFP_RECLAIMABLE, EventKind

# BPF kind (bits 24..27 of size_kind) -> EventKind; 0 for none
KIND_TABLE = np.zeros(K["KMT_KIND_MASK"] + 1, np.uint8)
KIND_TABLE[K["KMT_K_ALLOC"]] = KIND_TABLE[K["KMT_K_KMALLOC"]] = EventKind.ALLOC
KIND_TABLE[K["KMT_K_FREE"]] = EventKind.FREE
KIND_TABLE[K["KMT_K_CACHE_CREATE"]] = EventKind.CACHE_CREATE
KIND_TABLE[K["KMT_K_CACHE_DESTROY"]] = EventKind.CACHE_DESTROY

# The decoder's own work arrays, kept with the columns so that they are reused too.
SCRATCH = {"_raw": np.dtype(np.uint8), "_mask": np.dtype(np.bool_),
           "_i": np.dtype(np.int32), "_j": np.dtype(np.int32)}
MIN_CHUNK_ROWS = 1 << 16  # a 20 ms poll at ~2.2 M events/s is ~45 000 events
# Above this object size a kmalloc table would be large: the kmalloc caches of SLUB end at
# 8 KiB (KMALLOC_MAX_CACHE_SIZE, two pages), so this never applies on x86 6.x.
MAX_TABLE_SIZE = 1 << 20
# the kmalloc families, in ``kmalloc_type()`` order of precedence from last to first
FAMILIES = ("kmalloc-", "kmalloc-cg-", "kmalloc-rcl-", "dma-kmalloc-")
_ACCOUNT_SHIFT = GFP_ACCOUNT.bit_length() - 1
_RECLAIMABLE_SHIFT = GFP_RECLAIMABLE.bit_length() - 1
_DMA_SHIFT = GFP_DMA.bit_length() - 1


class KmallocIds:
    """The kmalloc cache an allocation went to, picked as the kernel's ``kmalloc_type()``
    picks it (include/linux/slab.h): ``__GFP_DMA`` -> ``dma-kmalloc-<n>``, else
    ``__GFP_RECLAIMABLE`` -> ``kmalloc-rcl-<n>``, else ``__GFP_ACCOUNT`` -> ``kmalloc-cg-<n>``,
    else ``kmalloc-<n>``, by object size; -1 for none (kmalloc_large, or a size between
    caches). A flag whose family the kernel has no cache of counts as unset, as it does
    there (no ``dma-kmalloc`` without ZONE_DMA, no ``kmalloc-cg`` before 5.14). Filed by
    ``__GFP_ACCOUNT`` alone, the reclaimable accounted allocations (``GFP_KERNEL_ACCOUNT |
    __GFP_RECLAIMABLE``: 234 in churn run 0 of the 22:06 study) went to ``kmalloc-cg-96``,
    and ``kmalloc-rcl-96`` gained slabs with no traced allocation. Not told apart: the
    ``kmem_buckets`` caches of 6.11 on (``memdup_user-<n>``), whose allocations the kmalloc
    tracepoint reports with the same flags as plain kmalloc ones.

    ``families`` maps a family prefix (:data:`FAMILIES`) -> {object size: cache id}; one
    table of all four, indexed by ``type * width + min(size, width - 1)`` (the last entry
    of each part is -1)."""

    def __init__(self, families: dict[str, dict[int, int]]):
        top = max((s for table in families.values() for s in table), default=0)
        self.width = min(top, MAX_TABLE_SIZE) + 2
        self.table = np.full(len(FAMILIES) * self.width, -1, np.int32)
        for t, prefix in enumerate(FAMILIES):
            for size, cache_id in families.get(prefix, {}).items():
                if size <= MAX_TABLE_SIZE:
                    self.table[t * self.width + size] = cache_id
        # (dma, reclaimable, accounted) flag bits -> the start of its family's part
        have = [bool(families.get(prefix)) for prefix in FAMILIES]
        self.base = np.zeros(8, np.int32)
        for k in range(8):
            dma, rcl, acct = k & 4 and have[3], k & 2 and have[2], k & 1 and have[1]
            self.base[k] = (3 if dma else 2 if rcl else 1 if acct else 0) * self.width

    def into(self, size: np.ndarray, gfp: np.ndarray, out: np.ndarray,
             index: np.ndarray) -> None:
        """``out`` = the cache ids of ``size``/``gfp``; ``index`` is a work array of the
        same shape (int32)."""
        np.right_shift(gfp, _ACCOUNT_SHIFT, out=out, casting="unsafe")
        np.bitwise_and(out, 1, out=out)
        np.right_shift(gfp, _RECLAIMABLE_SHIFT - 1, out=index, casting="unsafe")
        np.bitwise_and(index, 2, out=index)
        np.bitwise_or(out, index, out=out)
        np.left_shift(gfp, 2 - _DMA_SHIFT, out=index, casting="unsafe")
        np.bitwise_and(index, 4, out=index)
        np.bitwise_or(out, index, out=out)
        np.take(self.base, out, out=out)
        np.minimum(size, self.width - 1, out=index, casting="unsafe")
        np.add(index, out, out=index)
        np.take(self.table, index, out=out, mode="clip")


class ColumnChunk:
    """Every trace column, and the decoder's work arrays, for up to ``cap`` rows. ``aux``
    and ``aux2`` are zero on every slab row: they are made zero, and no decode writes
    them."""

    ZERO = ("aux", "aux2")

    def __init__(self, cap: int, pool: "ChunkPool | None" = None):
        self.cap = cap
        self.pool = pool
        self.arrays = {name: (np.zeros if name in self.ZERO else np.empty)(cap, dt)
                       for name, dt in (COLUMNS | SCRATCH).items()}

    def columns(self, rows: int) -> dict[str, np.ndarray]:
        """The trace columns (all but ``seq``) of the first ``rows`` rows, as views."""
        return {name: self.arrays[name][:rows] for name in COLUMNS if name != "seq"}

    def release(self) -> None:
        """The rows have been copied (or dropped): the chunk may be used again."""
        if self.pool is not None:
            self.pool.give(self)


class ChunkPool:
    """Chunks the drain decodes into and the writer thread hands back. At most
    ``keep_rows`` rows of free chunks are kept (a writer sealing a part lets polls queue up;
    beyond that, chunks are made afresh and dropped after use, as fresh arrays were)."""

    def __init__(self, keep_rows: int = 16 * MIN_CHUNK_ROWS):
        self.keep_rows = keep_rows
        self._free: list[ColumnChunk] = []
        self._free_rows = 0
        self._lock = threading.Lock()

    def take(self, rows: int) -> ColumnChunk:
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i].cap >= rows:
                    chunk = self._free.pop(i)
                    self._free_rows -= chunk.cap
                    return chunk
        return ColumnChunk(max(rows, MIN_CHUNK_ROWS), self)

    def give(self, chunk: ColumnChunk) -> None:
        with self._lock:
            if self._free_rows + chunk.cap <= self.keep_rows:
                self._free.append(chunk)
                self._free_rows += chunk.cap


def columns(recs: np.ndarray, xlate: np.ndarray, kmalloc_ids: KmallocIds,
            chunk: ColumnChunk | None = None, offset: int = 0) -> dict:
    """Trace columns (all but ``seq``) of ``recs``, 1-D: views of rows ``offset`` on of
    ``chunk``'s arrays, or of fresh ones. ``recs`` may be a 1-D event array or a (batches x
    KMT_BATCH) view of the ring itself, decoded in place (each column is written in that
    shape through a view). ``xlate[i]`` is the cache id of BPF cache index i (-1 unknown);
    indices past its end are unknown too."""
    n = recs.size
    if chunk is None:
        chunk, offset = ColumnChunk(n), 0
    elif chunk.cap < offset + n:
        raise ValueError(f"{n} rows at {offset} do not fit a chunk of {chunk.cap}")
    flat = {name: a[offset:offset + n] for name, a in chunk.arrays.items()}
    o = {name: a.reshape(recs.shape) for name, a in flat.items()}
    size_kind = recs["size_kind"]
    raw = o["_raw"]
    np.right_shift(size_kind, K["KMT_KIND_SHIFT"], out=raw, casting="unsafe")
    np.bitwise_and(raw, K["KMT_KIND_MASK"], out=raw)
    np.take(KIND_TABLE, raw, out=o["kind"], mode="clip")
    np.bitwise_and(size_kind, K["KMT_SIZE_MASK"], out=o["bytes"], casting="unsafe")
    np.right_shift(size_kind, K["KMT_CTX_SHIFT"], out=o["ctx"], casting="unsafe")
    idx = recs["cache_idx"]
    cache_id = o["cache_id"]
    if idx.max(initial=0) < len(xlate):
        np.take(xlate, idx, out=cache_id, mode="clip")
    else:
        known = idx < len(xlate)
        cache_id[:] = -1
        cache_id[known] = xlate[idx[known]]
    kmalloc = np.equal(raw, K["KMT_K_KMALLOC"], out=o["_mask"])
    if kmalloc.any():
        kmalloc_ids.into(o["bytes"], recs["gfp"], o["_j"], o["_i"])
        np.copyto(cache_id, o["_j"], where=kmalloc)
    for name in ("ts_ns", "cpu", "ptr", "memcg_id", "pid", "gfp"):
        np.copyto(o[name], recs[name], casting="unsafe")
    return {name: a for name, a in flat.items() if name in COLUMNS and name != "seq"}
