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
from kmemtrace.trace.schema import COLUMNS, GFP_ACCOUNT, EventKind

# BPF kind (bits 24..27 of size_kind) -> EventKind; 0 for none
KIND_TABLE = np.zeros(K["KMT_KIND_MASK"] + 1, np.uint8)
KIND_TABLE[K["KMT_K_ALLOC"]] = KIND_TABLE[K["KMT_K_KMALLOC"]] = EventKind.ALLOC
KIND_TABLE[K["KMT_K_FREE"]] = EventKind.FREE
KIND_TABLE[K["KMT_K_CACHE_CREATE"]] = EventKind.CACHE_CREATE
KIND_TABLE[K["KMT_K_CACHE_DESTROY"]] = EventKind.CACHE_DESTROY

# The decoder's own work arrays, kept with the columns so that they are reused too.
SCRATCH = {"_raw": np.dtype(np.uint8), "_mask": np.dtype(np.bool_),
           "_acct": np.dtype(np.bool_), "_i": np.dtype(np.int32), "_j": np.dtype(np.int32)}
MIN_CHUNK_ROWS = 1 << 16  # a 20 ms poll at ~2.2 M events/s is ~45 000 events
# Above this object size a kmalloc table would be large: the kmalloc caches of SLUB end at
# 8 KiB (KMALLOC_MAX_CACHE_SIZE, two pages), so this never applies on x86 6.x.
MAX_TABLE_SIZE = 1 << 20


class KmallocIds:
    """kmalloc-cg-<n> for __GFP_ACCOUNT, else kmalloc-<n>, by object size; -1 for none
    (kmalloc_large, or a size between caches). ``families`` maps accounted (bool) ->
    {object size: cache id}. One table of both families, indexed by
    ``accounted * width + min(size, width - 1)`` (the last entry of each half is -1)."""

    def __init__(self, families: dict[bool, dict[int, int]]):
        top = max((s for table in families.values() for s in table), default=0)
        self.width = min(top, MAX_TABLE_SIZE) + 2
        self.table = np.full(2 * self.width, -1, np.int32)
        for accounted, table in families.items():
            for size, cache_id in table.items():
                if size <= MAX_TABLE_SIZE:
                    self.table[int(accounted) * self.width + size] = cache_id

    def into(self, size: np.ndarray, gfp: np.ndarray, out: np.ndarray, acct: np.ndarray,
             index: np.ndarray) -> None:
        """``out`` = the cache ids of ``size``/``gfp``; ``acct`` and ``index`` are work
        arrays of the same shape (bool, int32)."""
        np.minimum(size, self.width - 1, out=index, casting="unsafe")
        np.bitwise_and(gfp, GFP_ACCOUNT, out=out, casting="unsafe")  # out: a work array here
        np.not_equal(out, 0, out=acct)
        np.add(index, self.width, out=index, where=acct)
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
        kmalloc_ids.into(o["bytes"], recs["gfp"], o["_j"], o["_acct"], o["_i"])
        np.copyto(cache_id, o["_j"], where=kmalloc)
    for name in ("ts_ns", "cpu", "ptr", "memcg_id", "pid", "gfp"):
        np.copyto(o[name], recs[name], casting="unsafe")
    return {name: a for name, a in flat.items() if name in COLUMNS and name != "seq"}
