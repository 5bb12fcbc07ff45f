"""Properties every strategy must keep on any trace (hypothesis-generated).

The reference is a few lines of plain Python that pair frees with allocations by pointer;
the replay must agree with it whatever the strategy decides about slabs and caches.
"""

from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmemtrace.metrics import compute_metrics
from kmemtrace.model.state import (
    C_DEAD_EMPTY_PAGES,
    C_INST_FREE_HEAD,
    C_INST_HEAD,
    C_INST_TAIL,
    C_SLAB_FREE_HEAD,
    C_STRANDED_OBJ_BYTES,
    C_STRANDED_SLAB_PAGES,
    G_SIZE,
    I_CACHE,
    M_STATE,
    MEMCG_BITS,
    MEMCG_MASK,
    MS_ONLINE,
    NC,
    S_INST,
    S_INUSE,
    S_PAGES,
    SERIES_NAMES,
)
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.reader import open_trace

from conftest import TraceBuilder

FIXTURE_OK = HealthCheck.function_scoped_fixture  # each example writes its own dir
MEMCGS = (100, 101, 102)  # 102 is a child of 100
GEOM = ({"objs_per_slab": 3, "order": 0}, {"objs_per_slab": 8, "order": 1})

op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("free"), st.integers(0, 10_000), st.integers(0, 2)),
    st.tuples(st.just("offline"), st.integers(0, 2)),
    st.tuples(st.just("stray"), st.integers(0, 2)),  # free of a never-allocated pointer
)


def _charged(memcg, offline):
    """An offline memcg's allocations go to its nearest online ancestor (1 = root)."""
    parent = {102: 100}
    while memcg in offline:
        memcg = parent.get(memcg, 1)
    return memcg


def build(tmp_path, ops, era_seed):
    tb = TraceBuilder(path=tmp_path / f"t{era_seed}", ncpus=3)
    for g in GEOM:
        tb.cache(size=64, **g)
    tb.mkdir(1, 100)
    tb.mkdir(2, 101)
    tb.mkdir(3, 102, parent=100, level=2)
    live: dict[int, tuple[int, int]] = {}  # ptr -> (cache, memcg)
    offline: set[int] = set()
    ts, next_ptr = 10, 0x1000
    for o in ops:
        ts += 1_000_000
        if o[0] == "alloc":
            _, mi, cache, cpu = o
            tb.alloc(ts, next_ptr, MEMCGS[mi], cache=cache, cpu=cpu)
            live[next_ptr] = (cache, _charged(MEMCGS[mi], offline))
            next_ptr += 0x40
        elif o[0] == "free" and live:
            ptr = sorted(live)[o[1] % len(live)]
            tb.free(ts, ptr, cpu=o[2])
            del live[ptr]
        elif o[0] == "offline":
            memcg = MEMCGS[o[1]]
            if memcg == 100 and 102 not in offline:
                continue  # the kernel refuses rmdir of a parent with a live child
            tb.offline(ts, memcg)
            offline.add(memcg)
        elif o[0] == "stray":
            tb.free(ts, 0xdead0000 + o[1], cpu=o[1])
    return open_trace(tb.write(end_ns=ts + 5_000_000_000)), live, offline


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE_OK])
@given(ops=st.lists(op, min_size=1, max_size=120), era=st.sampled_from(["3.14", "5.16", "6.8"]))
def test_invariants_hold_for_every_strategy(tmp_path, ops, era):
    trace, live, offline = build(tmp_path, ops, era)
    result = replay(trace, select("all", {}), era=era)
    strays = sum(1 for o in ops if o[0] == "stray")
    # Live objects of offline memcgs, by (cache, memcg): what a dead cache must still hold.
    held = Counter((c, g) for c, g in live.values() if g in offline)
    for run in result.runs:
        m = compute_metrics(run)
        name = run.strategy.name
        assert m.allocs - m.frees == m.objects_live_end == len(live), name
        assert m.frees_unknown == strays, name
        ctr = run.model.ctr.copy()
        ctr[[C_SLAB_FREE_HEAD, C_INST_FREE_HEAD, C_INST_HEAD, C_INST_TAIL]] = 0  # -1: empty
        assert (ctr[:NC] >= 0).all(), name
        for cache, g in enumerate(GEOM):
            n_live = sum(1 for c, _ in live.values() if c == cache)
            assert m.footprint_pages_end >= -(-n_live // g["objs_per_slab"]) << g["order"], name
        assert m.pinned_pages_end <= m.footprint_pages_end, name
        assert m.free_after_destroy == 0 and m.destroy_with_live_objects == 0, name
        if name in ("way1", "way4", "reparent"):
            # Both destroy a dead cache exactly when its last object goes.
            assert m.dead_caches_end == len(held), name
        if name in ("way3", "objcg"):
            assert m.pinned_pages_peak == 0 and m.dead_caches_end == 0, name
        if name == "current":
            assert m.dead_caches_end >= len(held), name
        assert _stranded_from_scratch(run.model) == (
            ctr[C_STRANDED_SLAB_PAGES], ctr[C_STRANDED_OBJ_BYTES]), name
        assert m.footprint_bytes_end >= m.stranded_bytes_end, name
        assert m.footprint_bytes_peak >= m.stranded_bytes_peak, name
        assert m.stranded_bytes_end == (ctr[C_STRANDED_SLAB_PAGES] + ctr[C_DEAD_EMPTY_PAGES]
                                        ) * 4096 + ctr[C_STRANDED_OBJ_BYTES], name
        _peaks_cover_samples(m, run.model.series, name)
        if not offline:
            assert m.stranded_bytes_peak == m.stranded_page_seconds == 0, name
            assert m.metadata_bytes_peak == m.dying_memcgs_peak == 0, name
    _footprint_same_until_first_offline(tmp_path, ops, era)


def _stranded_from_scratch(model):
    """Whole-slab pages and mixed-slab bytes of offline memcgs, recounted from the live
    object table (the loop keeps them incrementally)."""
    dead_by_slab = Counter()
    for key, val in model.hobj:
        s, g = val >> MEMCG_BITS, val & MEMCG_MASK
        if key != 0 and g != 0 and model.memcg[M_STATE, g] != MS_ONLINE:
            dead_by_slab[int(s)] += 1
    pages = obj_bytes = 0
    for s, dead in dead_by_slab.items():
        if dead == model.slab[S_INUSE, s]:
            pages += model.slab[S_PAGES, s]
        else:
            obj_bytes += dead * model.geom[G_SIZE, model.inst[I_CACHE, model.slab[S_INST, s]]]
    return pages, obj_bytes


def _peaks_cover_samples(m, series, name):
    rows = {"total_pages": m.footprint_pages_peak, "stranded_bytes": m.stranded_bytes_peak,
            "waste_bytes": m.waste_bytes_peak, "metadata_bytes": m.metadata_bytes_peak,
            "dying_memcgs": m.dying_memcgs_peak}
    names = list(SERIES_NAMES)
    for row, peak in rows.items():
        assert series[names.index(row)].max() <= peak, (name, row)


def _footprint_same_until_first_offline(tmp_path, ops, era):
    """Before any memcg goes offline the strategies that place objects alike (a cache per
    memcg) hold exactly the same slabs; objcg's shared caches differ by design."""
    cut = next((i for i, o in enumerate(ops) if o[0] == "offline"), len(ops))
    trace, _, _ = build(tmp_path, ops[:cut], f"{era}-cut")
    pre = [compute_metrics(r) for r in replay(trace, select("all", {}), era=era).runs]
    per_memcg = [m for m in pre if m.strategy != "objcg"]
    assert len({(m.footprint_pages_peak, m.footprint_page_seconds, m.waste_bytes_peak)
                for m in per_memcg}) == 1
    assert {m.stranded_bytes_peak for m in pre} == {0}


@settings(max_examples=10, deadline=None, suppress_health_check=[FIXTURE_OK])
@given(ops=st.lists(op, min_size=1, max_size=80))
def test_same_trace_same_metrics(tmp_path, ops):
    trace, _, _ = build(tmp_path, ops, "x")
    first = replay(trace, select("all", {}))
    again = replay(trace, select("all", {}))
    for a, b in zip(first.runs, again.runs, strict=True):
        da = compute_metrics(a).to_dict()
        db = compute_metrics(b).to_dict()
        da.pop("loop_seconds")
        db.pop("loop_seconds")
        assert da == db
        assert np.array_equal(a.model.series, b.model.series)
