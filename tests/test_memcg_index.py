"""MemcgIndex: dense indices in order of first appearance, across table growth."""

import numpy as np

from kmemtrace.replay.engine import MemcgIndex
from kmemtrace.trace.schema import ROOT_MEMCG_ID


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
