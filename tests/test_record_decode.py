"""Slab records to trace columns (kmemtrace/record/decode.py), on a hand-made span."""

import numpy as np

from kmemtrace.record.decode import KmallocIds, columns
from kmemtrace.record.events import EVENT_DTYPE, K
from kmemtrace.trace.schema import GFP_ACCOUNT, GFP_DMA, GFP_RECLAIMABLE, EventContext, EventKind


def _rec(kind: int, size: int, ctx: int, cache_idx: int = 0, gfp: int = 0) -> tuple:
    size_kind = size | kind << K["KMT_KIND_SHIFT"] | ctx << K["KMT_CTX_SHIFT"]
    return (1000 + kind, 0xffff0000 + size, 7, 42, gfp, size_kind, cache_idx, 1)


def test_a_span_of_every_kind_decodes_to_its_columns():
    recs = np.array([
        _rec(K["KMT_K_ALLOC"], 256, K["KMT_CTX_TASK"], cache_idx=2, gfp=GFP_ACCOUNT),
        _rec(K["KMT_K_FREE"], 0, K["KMT_CTX_SOFTIRQ"], cache_idx=1),
        _rec(K["KMT_K_KMALLOC"], 64, K["KMT_CTX_TASK"], gfp=GFP_ACCOUNT),  # kmalloc-cg-64
        _rec(K["KMT_K_KMALLOC"], 64, K["KMT_CTX_HARDIRQ"]),  # kmalloc-64
        _rec(K["KMT_K_KMALLOC"], 8192 * 4, K["KMT_CTX_TASK"]),  # kmalloc_large: no cache
        _rec(K["KMT_K_FREE"], 0, K["KMT_CTX_TASK"], cache_idx=9),  # index not known yet
        _rec(K["KMT_K_CACHE_CREATE"], 0, K["KMT_CTX_TASK"], cache_idx=1),
    ], EVENT_DTYPE)
    xlate = np.array([-1, 30, 31], np.int32)  # BPF index 1 -> cache 30, 2 -> 31
    ids = KmallocIds({"kmalloc-cg-": {64: 11, 128: 12}, "kmalloc-": {32: 20, 64: 21}})
    cols = columns(recs, xlate, ids)
    assert cols["kind"].tolist() == [EventKind.ALLOC, EventKind.FREE, EventKind.ALLOC,
                                     EventKind.ALLOC, EventKind.ALLOC, EventKind.FREE,
                                     EventKind.CACHE_CREATE]
    assert cols["cache_id"].tolist() == [31, 30, 11, 21, -1, -1, 30]
    assert cols["bytes"].tolist() == [256, 0, 64, 64, 32768, 0, 0]
    assert cols["ctx"].tolist() == [EventContext.TASK, EventContext.SOFTIRQ, EventContext.TASK,
                                    EventContext.HARDIRQ, EventContext.TASK, EventContext.TASK,
                                    EventContext.TASK]
    assert cols["ts_ns"].tolist() == (1000 + (recs["size_kind"] >> 24 & 0xf)).tolist()
    assert cols["ptr"].tolist() == recs["ptr"].tolist()
    assert cols["memcg_id"].tolist() == [7] * 7 and cols["pid"].tolist() == [42] * 7
    assert cols["aux"].tolist() == [0] * 7 and cols["aux2"].tolist() == [0] * 7
    assert {c.dtype.str for c in (cols["cpu"], cols["pid"], cols["cache_id"])} == {"<i4"}


def _kmalloc_ids(table: KmallocIds, size: np.ndarray, gfp: np.ndarray) -> list[int]:
    out = np.empty(size.shape, np.int32)
    table.into(size, gfp, out, np.empty(size.shape, np.int32))
    return out.tolist()


def test_kmalloc_sizes_between_caches_have_none():
    ids = KmallocIds({"kmalloc-cg-": {128: 11}, "kmalloc-": {32: 20, 64: 21}})
    size = np.array([16, 32, 48, 64, 96], np.int32)
    assert _kmalloc_ids(ids, size, np.zeros(5, np.uint32)) == [-1, 20, -1, 21, -1]
    assert _kmalloc_ids(ids, size, np.full(5, GFP_ACCOUNT, np.uint32)) == [-1] * 5


def test_a_kmalloc_goes_to_the_family_kmalloc_type_picks():
    """``kmalloc_type()`` (include/linux/slab.h): __GFP_DMA before __GFP_RECLAIMABLE before
    __GFP_ACCOUNT. ``dentry`` names are ``GFP_KERNEL_ACCOUNT | __GFP_RECLAIMABLE``: in
    ``kmalloc-rcl-96``, not ``kmalloc-cg-96``. A kernel with no family for a flag (no
    ZONE_DMA: no ``dma-kmalloc``; before 5.14: no ``kmalloc-cg``) does not look at it."""
    ids = KmallocIds({"kmalloc-": {96: 1}, "kmalloc-cg-": {96: 2}, "kmalloc-rcl-": {96: 3},
                      "dma-kmalloc-": {96: 4}})
    flags = [0, GFP_ACCOUNT, GFP_RECLAIMABLE, GFP_ACCOUNT | GFP_RECLAIMABLE, GFP_DMA,
             GFP_DMA | GFP_ACCOUNT | GFP_RECLAIMABLE]
    gfp = np.array(flags, np.uint32) | 0xCC0  # GFP_KERNEL's bits change nothing
    size = np.full(len(flags), 96, np.int32)
    assert _kmalloc_ids(ids, size, gfp) == [1, 2, 3, 3, 4, 4]
    no_dma_no_cg = KmallocIds({"kmalloc-": {96: 1}, "kmalloc-rcl-": {96: 3}})
    assert _kmalloc_ids(no_dma_no_cg, size, gfp) == [1, 1, 3, 3, 1, 3]


def test_a_view_of_full_batches_decodes_like_its_events_one_by_one():
    """The drain decodes a span of full batches in the ring's own (batches x KMT_BATCH)
    shape, without copying it out first: same columns, in the same order, 1-D."""
    from kmemtrace.record.events import BATCH_DTYPE
    from kmemtrace.record.ring import event_views

    n = K["KMT_BATCH"]
    batches = np.zeros(3, BATCH_DTYPE)
    batches["count"] = n
    kinds = [K["KMT_K_ALLOC"], K["KMT_K_KMALLOC"], K["KMT_K_FREE"]]
    flat = np.array([_rec(kinds[i % 3], 64, K["KMT_CTX_TASK"], cache_idx=i % 4,
                          gfp=GFP_ACCOUNT * (i % 2)) for i in range(3 * n)], EVENT_DTYPE)
    flat["ts_ns"] = np.arange(3 * n) * 10
    batches["ev"] = flat.reshape(3, n)
    [view] = event_views(batches)
    assert view.shape == (3, n) and np.shares_memory(view, batches)  # no copy taken
    xlate = np.array([-1, 30, 31], np.int32)  # index 3 unknown: the slow path too
    ids = KmallocIds({"kmalloc-cg-": {64: 11}, "kmalloc-": {64: 21}})
    got, want = columns(view, xlate, ids), columns(flat, xlate, ids)
    assert set(got) == set(want)
    for name in want:
        assert got[name].shape == (3 * n,) and got[name].dtype == want[name].dtype, name
        assert not np.shares_memory(got[name], batches), name
        assert got[name].tolist() == want[name].tolist(), name
    assert sorted(set(got["cache_id"].tolist())) == [-1, 11, 21, 30, 31]


def test_a_poll_s_pieces_decode_into_one_chunk_like_their_concatenation():
    """The drain decodes a poll's pieces (runs of full batches as ring views, the partial
    batches' and the singles' events) one after the other into one reused chunk: the
    chunk's rows must be those of the pieces decoded apart, in piece order, whatever the
    chunk held before."""
    from kmemtrace.record.decode import ChunkPool

    n = K["KMT_BATCH"]
    kinds = [K["KMT_K_ALLOC"], K["KMT_K_KMALLOC"], K["KMT_K_FREE"]]
    flat = np.array([_rec(kinds[i % 3], 64, K["KMT_CTX_TASK"], cache_idx=i % 3,
                          gfp=GFP_ACCOUNT * (i % 2)) for i in range(2 * n + 5)], EVENT_DTYPE)
    flat["ts_ns"] = np.arange(len(flat))
    pieces = [flat[:2 * n].reshape(2, n), flat[2 * n:]]
    xlate = np.array([-1, 30, 31], np.int32)
    ids = KmallocIds({"kmalloc-cg-": {64: 11}, "kmalloc-": {64: 21}})
    pool = ChunkPool()
    chunk = pool.take(len(flat))
    for a in chunk.arrays.values():
        if a.dtype.kind in "iu":
            a[:] = 99  # what an earlier poll left, except aux/aux2 (never written)
    chunk.arrays["aux"][:] = chunk.arrays["aux2"][:] = 0
    offset = 0
    for recs in pieces:
        columns(recs, xlate, ids, chunk, offset)
        offset += recs.size
    got, want = chunk.columns(len(flat)), columns(flat, xlate, ids)
    assert set(got) == set(want)
    for name in want:
        assert got[name].tolist() == want[name].tolist(), name
    chunk.release()
    assert pool.take(len(flat)) is chunk  # handed back, then reused
