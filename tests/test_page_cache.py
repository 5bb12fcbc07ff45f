"""Page cache holds offline memcgs: hand scenarios worked out on paper.

On 6.x a charged page-cache folio holds its memcg's css until it is uncharged, and LRU
folios are not moved to the parent at offline, so a removed memcg with cached files stays
dying until its last page leaves the cache (docs/replay.md, "Dying memcgs and page cache").
The model counts it in ``dying_memcgs_with_page_cache``, the same way for every strategy;
``dying_memcgs`` stays slab-only (the era's rule), the fair metric.
"""

import pytest

from kmemtrace.errors import TraceFormatError
from kmemtrace.metrics import compute_metrics, memcg_free_times, series
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import open_trace
from kmemtrace.trace.schema import EventKind

from conftest import SEC

FOLIO_A, FOLIO_B = 0xFFFFEA0000100000, 0xFFFFEA0000200000


def _page_cache(tb, ts, folio, memcg, pages):
    tb.event(ts, EventKind.PAGE_CACHE, ptr=folio, memcg_id=memcg, aux=pages)


def _run(trace, names="all", **kw):
    r = replay(trace, select(names, {}), samples=5, **kw)
    return r, {run.strategy.name: compute_metrics(run) for run in r.runs}


def test_offline_memcg_is_dying_until_its_last_page_cache_folio_goes(trace_builder):
    """Memcg 100 caches folio A (1 page, t=10 ns) and B (2 pages, t=20 ns), goes offline
    at 1 s; A leaves the cache at 2 s, B at 3 s; the trace ends at 4 s. No slab at all.

    On paper, every strategy: slab-only dying 0 throughout; with page cache, dying from
    1 s to 3 s: peak 1, end 0, time average 2 s / 4 s = 0.5. Samples every 1 s (0..4 s)
    see 0, 0, 1, 1, 0 (a sample at an event's instant is taken before the event)."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    _page_cache(tb, 10, FOLIO_A, 100, 1)
    _page_cache(tb, 20, FOLIO_B, 100, 2)
    tb.offline(1 * SEC, 100)
    _page_cache(tb, 2 * SEC, FOLIO_A, 100, -1)
    _page_cache(tb, 3 * SEC, FOLIO_B, 100, -2)
    r, m = _run(open_trace(tb.write(end_ns=4 * SEC)))
    assert set(m) == set(REGISTRY)
    for name, got in m.items():
        assert got.dying_memcgs_peak == 0, name
        assert got.dying_memcgs_with_page_cache_peak == 1, name
        assert got.dying_memcgs_with_page_cache_end == 0, name
        assert got.dying_memcgs_with_page_cache_avg == pytest.approx(0.5), name
        assert got.page_cache_rows == 4, name
    s = series(r.runs[0])
    assert list(s["page_cache_dying_memcgs"]) == [0, 0, 1, 1, 0]
    assert list(s["dying_memcgs"]) == [0] * 5
    for run in r.runs:  # offline at 1 s, nothing holds it from 3 s
        assert memcg_free_times(run, r.memcg_ids) == {100: (1 * SEC, 3 * SEC)}
    assert any("page cache" in note for note in r.notes)


def test_page_cache_of_a_child_holds_its_offline_parent(trace_builder):
    """Memcg 200 has child 100, which caches one folio; 100 goes offline at 1 s, 200 at
    2 s; the folio leaves at 3 s; end at 4 s. The child's css holds its parent's: 2 dying
    from 2 s to 3 s (1 from 1 s), none after. Slab-only: none."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 200)
    tb.mkdir(1, 100, parent=200, level=2)
    _page_cache(tb, 10, FOLIO_A, 100, 4)
    tb.offline(1 * SEC, 100)
    tb.offline(2 * SEC, 200)
    _page_cache(tb, 3 * SEC, FOLIO_A, 100, -4)
    r, m = _run(open_trace(tb.write(end_ns=4 * SEC)), "objcg")
    got = m["objcg"]
    assert memcg_free_times(r.runs[0], r.memcg_ids) == {100: (1 * SEC, 3 * SEC),
                                                        200: (2 * SEC, 3 * SEC)}
    assert got.dying_memcgs_peak == 0
    assert got.dying_memcgs_with_page_cache_peak == 2
    assert got.dying_memcgs_with_page_cache_end == 0
    # 1 memcg for 1 s, 2 for 1 s, over 4 s
    assert got.dying_memcgs_with_page_cache_avg == pytest.approx(3 / 4)


def test_slab_and_page_cache_pins_add_up_per_strategy(trace_builder):
    """Memcg 100 allocates one object never freed and caches one folio, goes offline at
    1 s; the folio leaves at 2 s; end at 3 s. Before v5.3 (current) the object's slab page
    holds the memcg to the end: dying 1 at the end on both counts. objcg reparents slab at
    offline: slab-only 0; with page cache 1 from 1 s to 2 s, 0 at the end."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.alloc(10, 0x1000, 100)
    _page_cache(tb, 20, FOLIO_A, 100, 1)
    tb.offline(1 * SEC, 100)
    _page_cache(tb, 2 * SEC, FOLIO_A, 100, -1)
    _, m = _run(open_trace(tb.write(end_ns=3 * SEC)), "current,objcg")
    cur, obj = m["current"], m["objcg"]
    assert cur.dying_memcgs_end == 1 and cur.dying_memcgs_with_page_cache_end == 1
    assert cur.dying_memcgs_with_page_cache_peak == 1  # one memcg, held by both
    assert obj.dying_memcgs_peak == 0
    assert obj.dying_memcgs_with_page_cache_peak == 1
    assert obj.dying_memcgs_with_page_cache_end == 0


def test_a_trace_without_page_cache_records_says_so(trace_builder):
    """An older trace (no PAGE_CACHE rows, no ``record.page_cache``): the page-cache
    metrics are absent, not zero, and the replay notes why."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 100)
    tb.offline(1 * SEC, 100)
    r, m = _run(open_trace(tb.write(end_ns=2 * SEC)), "objcg")
    got = m["objcg"]
    assert memcg_free_times(r.runs[0], r.memcg_ids) == {100: (1 * SEC, 1 * SEC)}
    assert got.dying_memcgs_with_page_cache_peak is None
    assert got.dying_memcgs_with_page_cache_end is None
    assert got.page_cache_rows is None
    assert any("no page-cache records" in note for note in r.notes)


def test_record_page_cache_must_be_a_boolean(trace_builder):
    tb = trace_builder(record={"page_cache": "yes"})
    tb.cache()
    with pytest.raises(TraceFormatError, match=r"record\.page_cache"):
        open_trace(tb.write(end_ns=SEC))
