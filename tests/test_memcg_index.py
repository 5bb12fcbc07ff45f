"""MemcgIndex: dense indices in order of first appearance, across table growth."""

import numpy as np

from kmemtrace.replay.engine import MemcgIndex
from kmemtrace.trace.schema import GFP_ACCOUNT, ROOT_MEMCG_ID, EventContext, EventKind


def test_ids_get_indices_in_order_of_first_appearance_across_growth():
    index = MemcgIndex()
    assert index.get(7000) == 1  # a memcg listed in meta before any batch
    # 300 new ids in one batch: the table (64 slots, at most half full) grows mid-batch
    rng = np.random.default_rng(3)
    fresh = (np.arange(300, dtype=np.uint64) * 4099 + 10_000)[rng.permutation(300)]
    batch = np.concatenate([[0, ROOT_MEMCG_ID, 7000], fresh, fresh[::-1], [7000, 0]])
    out = index.map(batch.astype(np.uint64))
    expected = [0, 0, 1, *range(2, 302), *range(301, 1, -1), 1, 0]
    assert out.tolist() == expected
    assert index.ids == [ROOT_MEMCG_ID, 7000, *fresh.tolist()]
    assert len(index) == 302
    # a later batch: known ids keep their index, a new one takes the next
    assert index.map(np.array([fresh[5], 99, 7000], dtype=np.uint64)).tolist() == [7, 302, 1]
    assert index.get(99) == 302 and index.get(12345) == 303
    assert index.map(np.array([12345], dtype=np.uint64)).tolist() == [303]


def test_empty_batch():
    assert MemcgIndex().map(np.zeros(0, dtype=np.uint64)).tolist() == []


def test_map_charged_maps_and_applies_the_charge_rule_in_one_pass():
    """A hand scenario: memcg 500 allocates in task, softirq and unknown context, from an
    accounted cache, an unaccounted one with and without __GFP_ACCOUNT, and an unknown
    cache id; frees keep their memcg. Table growth mid-batch must not restart the counts."""
    alloc, free = int(EventKind.ALLOC), int(EventKind.FREE)
    task, soft, unknown = (int(EventContext.TASK), int(EventContext.SOFTIRQ),
                           int(EventContext.UNKNOWN))
    accounted = np.array([True, False])  # cache 0 SLAB_ACCOUNT, cache 1 not
    rows = [  # (memcg id, kind, cache, gfp, ctx) -> expected index
        (500, alloc, 0, 0, task, 1),              # accounted cache, task: charged
        (500, alloc, 1, 0, task, 0),              # unaccounted, no __GFP_ACCOUNT: root
        (500, alloc, 1, GFP_ACCOUNT, task, 1),    # __GFP_ACCOUNT: charged
        (500, alloc, 0, 0, soft, 0),              # softirq: root, counted as interrupt
        (500, alloc, 1, 0, soft, 0),              # softirq, would not be charged: not counted
        (500, alloc, 0, 0, unknown, 1),           # unknown context counts as task
        (500, free, 1, 0, soft, 1),               # a free keeps its memcg
        (600, alloc, 7, GFP_ACCOUNT, task, 2),    # cache 7 is past the table: a bad row
    ]
    fresh = np.arange(100, dtype=np.uint64) + 10_000  # grows the 64-slot table mid-batch
    ids = np.array([r[0] for r in rows] + fresh.tolist(), dtype=np.uint64)
    n = len(ids)

    def col(k, fill, dtype):
        return np.array([r[k] for r in rows] + [fill] * len(fresh), dtype=dtype)

    out, counts = MemcgIndex().map_charged(
        ids, col(1, free, np.uint8), col(2, 0, np.int32), col(3, 0, np.uint32),
        col(4, task, np.uint8), accounted, False)
    assert out.tolist() == [r[5] for r in rows] + list(range(3, 103))
    assert len(out) == n
    assert counts.tolist() == [1, 1, 1]  # interrupt, unknown context, bad cache
    # before v4.5 every allocation from a known cache is charged (in softirq still not)
    out, counts = MemcgIndex().map_charged(
        ids[:8], col(1, free, np.uint8)[:8], col(2, 0, np.int32)[:8],
        col(3, 0, np.uint32)[:8], col(4, task, np.uint8)[:8], accounted, True)
    assert out.tolist() == [1, 1, 1, 0, 0, 1, 1, 0]  # an unknown cache is not charged
    assert counts.tolist() == [2, 1, 1]
