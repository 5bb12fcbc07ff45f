"""Each strategy on hand-built scenarios whose outcome was worked out on paper.

Scenario "survivors": memcg 100, one cache of 4 objects per one-page slab (min_partial 5,
era 5.16: CPU partial budget ceil(2*120/4) = 60 slabs), one CPU. Six objects are allocated
at t=10..15 ns: slab A fills (4), slab B holds 2. The memcg goes offline at 1 s. All six
are freed at 2 s + 0..5 ns, A's first. The trace ends at 10 s.

On paper:
* offline shrink (current, way1, way2): B leaves the CPU for the node partial list; A is
  full, on no list; nothing is empty, so 2 pages stay.
* the first free into full A parks it on the CPU partial stack (budget 60), later frees
  empty it there; B empties on the node partial list, where nr_partial 1 < min_partial 5
  keeps it. So ``current`` ends with the dead cache alive holding 2 empty pages.
* way1: cpu_partial = min_partial = 0: A goes to the node list at its first free and is
  discarded at its last; B likewise; destroy after the last free (2 s + 5 ns).
* way2 (period 2 s): the tick at 2 s runs after the free at 2 s (ties go to the trace) and
  finds objects; the 4 s tick shrinks both empty slabs and destroys: latency 3 s.
* way3: both slabs move to the root cache at offline, the dead cache dies at once; the
  parent keeps the pages (none freed).
* way4: the last free drops the live count to 0 and shuts the cache down (2 s + 5 ns).
* objcg: one shared cache, never a per-memcg one.
"""


import pytest

from kmemtrace.metrics import compute_metrics
from kmemtrace.model.metadata import metadata_costs
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import REGISTRY, select
from kmemtrace.trace.reader import open_trace

from conftest import SEC

MEMCG = 100


def _survivors(tb):
    tb.cache()
    tb.mkdir(0, MEMCG)
    for i in range(6):
        tb.alloc(10 + i, 0x1000 + 0x100 * i, MEMCG)
    tb.offline(1 * SEC, MEMCG)
    for i in range(6):
        tb.free(2 * SEC + i, 0x1000 + 0x100 * i)
    return open_trace(tb.write(end_ns=10 * SEC))


def _run(trace, names="all", params=None, **kw):
    r = replay(trace, select(names, params or {}), **kw)
    return {run.strategy.name: compute_metrics(run) for run in r.runs}


@pytest.fixture
def survivors(trace_builder):
    return _run(_survivors(trace_builder()))


def test_current_leaks_the_dead_cache(survivors):
    m = survivors["current"]
    assert m.dead_caches_end == 1
    assert m.dead_caches_never_destroyed == 1
    assert m.pinned_pages_end == 2
    assert m.pinned_empty_pages_end == 2  # every pinned page is an empty, parked slab
    assert m.slab_pages_allocated == 2
    assert m.slab_pages_freed == 0
    assert m.never_destroyed_empty == 1  # a real leak: only empty slabs left
    assert m.never_destroyed_live == 0
    assert m.destroy_latency_max_s is None  # nothing was destroyed after offline
    # pinned from offline (1 s) to the end (10 s): 2 pages x 9 s
    assert m.pinned_page_seconds == pytest.approx(18.0, rel=1e-6)
    # empty from the last free of each slab: A at 2 s + 3 ns, B at 2 s + 5 ns
    assert m.pinned_empty_page_seconds == pytest.approx(16.0, rel=1e-6)


def test_way1_destroys_at_the_last_free(survivors):
    m = survivors["way1"]
    assert m.dead_caches_end == 0
    assert m.caches_destroyed == 1
    assert m.destroy_latency_max_s == pytest.approx(1.0 + 5e-9)
    assert m.slab_pages_freed == 2
    assert m.pinned_pages_end == 0
    assert m.rcu_grace_periods == 2  # deactivation + destroy
    assert m.unsafe_destroy_windows == 0


def test_way2_destroys_at_the_first_tick_after_the_last_free(survivors):
    m = survivors["way2"]
    assert m.caches_destroyed == 1
    assert m.destroy_latency_max_s == pytest.approx(3.0)
    assert m.slab_pages_freed == 2
    assert m.dead_caches_end == 0
    assert m.reaper_scan_work > 0


def test_way2_period_is_a_parameter(trace_builder):
    m = _run(_survivors(trace_builder()), "way2", {"period": "500ms"})["way2"]
    # ticks every 0.5 s: the first after 2 s + 5 ns is 2.5 s
    assert m.destroy_latency_max_s == pytest.approx(1.5)


def test_way3_reparents_at_offline(survivors):
    m = survivors["way3"]
    assert m.destroyed_at_offline == 1
    assert m.destroy_latency_max_s is None  # no cache is destroyed *after* offline
    assert m.reparent_moves == 2
    assert m.pinned_pages_peak == 0
    assert m.slab_pages_freed == 0  # the parent (root) cache keeps both slabs
    assert m.dead_caches_peak == 0  # dead and destroyed in the same instant


def test_way4_destroys_at_the_last_free(survivors):
    m = survivors["way4"]
    assert m.destroy_latency_max_s == pytest.approx(1.0 + 5e-9)
    assert m.slab_pages_freed == 2
    assert m.percpu_ops == 6  # one get per allocation while online
    # every put after the kill is atomic, plus one page-counter charge: the first slab
    # misses the memcg stock and charges a 32-page batch, the second slab hits it
    assert m.atomic_ops == 6 + 1
    assert m.unsafe_destroy_windows == 0


def test_objcg_never_creates_per_memcg_caches(survivors):
    m = survivors["objcg"]
    assert m.caches_created == 1  # the shared root cache only
    assert m.dead_caches_peak == 0
    assert m.pinned_pages_peak == 0
    assert m.reparent_moves == 1  # the memcg's objcg moves to the root
    assert m.dying_memcgs_pinned_peak == 1  # its objcg lingers while objects live


PAGE = 4096


@pytest.mark.parametrize("name, stranded_page_s", [
    # Both slabs are held whole by the dead memcg from offline (1 s) until they empty
    # (2 s + 3 ns, 2 s + 5 ns) in every design; afterwards only where an empty slab stays
    # parked in a dead cache: current to the end (10 s), way2 until its 4 s tick.
    ("current", 2 * 9.0), ("way1", 2 * 1.0), ("way2", 2 * 3.0), ("way3", 2 * 1.0),
    ("way4", 2 * 1.0), ("objcg", 2 * 1.0),
])
def test_stranded_memory_is_the_same_measure_for_every_design(survivors, name,
                                                              stranded_page_s):
    m = survivors[name]
    assert m.footprint_bytes_peak == 2 * PAGE  # A and B, whoever owns them
    assert m.stranded_bytes_peak == 2 * PAGE  # way3's moved and objcg's shared slabs too
    assert m.stranded_slab_bytes_peak == 2 * PAGE
    assert m.stranded_object_bytes_peak == 0  # no slab mixes live and dead memcgs
    assert m.stranded_page_seconds == pytest.approx(stranded_page_s, rel=1e-6)
    # 6 objects of 192 B in 2 pages while all live
    assert m.waste_bytes_peak >= 2 * PAGE - 6 * 192


def test_dying_memcg_and_metadata_follow_each_era_rule(survivors):
    # Before v5.3 (current .. way4) the memcg is held while its caches have pages; way3
    # moves the pages (and their charge) to the parent at offline; objcg re-points the
    # objcg at offline and keeps only the objcg alive while objects live.
    assert survivors["current"].dying_memcgs_end == 1
    assert survivors["way1"].dying_memcgs_peak == 1
    assert survivors["way1"].dying_memcgs_end == 0
    assert survivors["way3"].dying_memcgs_peak == 0
    assert survivors["objcg"].dying_memcgs_peak == 0
    cur, w1, obj = survivors["current"], survivors["way1"], survivors["objcg"]
    assert cur.metadata_bytes_end == cur.metadata_bytes_peak > 0  # cache + memcg, kept
    assert w1.metadata_bytes_peak == cur.metadata_bytes_peak and w1.metadata_bytes_end == 0
    assert 0 < obj.metadata_bytes_peak < w1.metadata_bytes_peak  # one objcg, no cache
    assert obj.metadata_bytes_end == 0
    assert survivors["way3"].metadata_bytes_peak == 0  # dead and destroyed at once


def test_every_strategy_conserves_objects(survivors):
    assert set(survivors) == set(REGISTRY)
    for m in survivors.values():
        assert m.allocs == 6 and m.frees == 6 and m.objects_live_end == 0
        assert m.free_after_destroy == 0 and m.destroy_with_live_objects == 0


def test_current_self_destroys_from_the_free_path_without_min_partial(trace_builder):
    """CONFIG_SLUB_TINY has MIN_PARTIAL = 0: the last free discards the last slab, and
    3.14 queues the destruction from inside that free: the RFC's unsafe window."""
    tb = trace_builder()
    tb.cache(min_partial=0)
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG)
    tb.offline(SEC, MEMCG)
    tb.free(2 * SEC, 0x1000)
    m = _run(open_trace(tb.write(end_ns=3 * SEC)), "current")["current"]
    assert m.caches_destroyed == 1
    assert m.unsafe_destroy_windows == 1
    assert m.destroy_latency_max_s == pytest.approx(1.0)


def test_way2_pressure_reaps_without_a_period(trace_builder):
    tb = trace_builder()
    _ = _survivors  # same geometry, own timeline
    tb.cache()
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG)
    tb.offline(SEC, MEMCG)
    tb.free(2 * SEC, 0x1000)
    tb.pressure(5 * SEC)
    trace = open_trace(tb.write(end_ns=9 * SEC))
    idle = _run(trace, "way2", {"period": "0"})["way2"]
    assert idle.caches_destroyed == 0  # no tick, no pressure reaping: never
    pressed = _run(trace, "way2", {"period": "0", "pressure": "on"})["way2"]
    assert pressed.destroy_latency_max_s == pytest.approx(4.0)


def test_nested_memcg_reparents_to_its_online_parent(trace_builder):
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 200)
    tb.mkdir(1, MEMCG, parent=200, level=2)
    tb.alloc(10, 0x1000, MEMCG)
    tb.offline(SEC, MEMCG)
    tb.alloc(SEC + 1, 0x2000, 200)  # the parent allocates into the slab it inherited
    m = _run(open_trace(tb.write(end_ns=2 * SEC)), "way3")["way3"]
    assert m.reparent_moves == 1
    assert m.slab_pages_allocated == 1  # the parent's cache reused the moved slab's space
    assert m.caches_created == 2


def test_unaccounted_allocations_never_reach_a_memcg_cache(trace_builder):
    tb = trace_builder()
    tb.cache(accounted=False)
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG, accounted=False)
    tb.offline(SEC, MEMCG)
    m = _run(open_trace(tb.write(end_ns=2 * SEC)), "current")["current"]
    assert m.dead_caches_peak == 0 and m.caches_created == 1


def test_era_changes_the_outcome(trace_builder):
    """v6.8: a CPU partial slab is not frozen, but an empty one still stays parked; the
    3.14 discard test is '>' so one more partial slab must exist before a discard."""
    trace = _survivors(trace_builder())
    for era in ("3.14", "5.15", "5.16", "6.8"):
        m = _run(trace, "current,way1", era=era)
        assert m["current"].pinned_pages_end == 2, era
        assert m["way1"].pinned_pages_end == 0, era


def test_cpu_partial_budget_follows_the_era(trace_builder):
    """40 full slabs of 4 objects each get one free on CPU 0: each is parked on the CPU
    partial stack. Up to v5.15 the budget is 30 *objects* (size < 256): the 32nd push
    finds 31 > 30 and drains the stack to the node list (one list_lock). From v5.16 it is
    DIV_ROUND_UP(2 * 120, 4) = 60 *slabs*: nothing drains."""
    tb = trace_builder()
    tb.cache(accounted=False)
    for i in range(160):
        tb.alloc(10 + i, 0x1000 + 0x40 * i, 1, accounted=False)
    for s in range(40):
        tb.free(1000 + s, 0x1000 + 0x40 * 4 * s)
    trace = open_trace(tb.write(end_ns=SEC))
    locks = {era: _run(trace, "objcg", era=era)["objcg"].list_lock_takes
             for era in ("3.14", "5.15", "5.16", "6.8")}
    assert locks == {"3.14": 1, "5.15": 1, "5.16": 0, "6.8": 0}


def test_recorded_cpu_partial_zero_is_honoured(trace_builder):
    """The same frees on a host tuned to cpu_partial=0 (neither era's default): every push
    drains the stack at once (put_cpu_partial's cpu_partial == 0 path), in any era. The
    40th slab is still CPU 0's active slab, so its free is lock-free: 39 drains."""
    tb = trace_builder()
    tb.cache(accounted=False, cpu_partial=0)
    for i in range(160):
        tb.alloc(10 + i, 0x1000 + 0x40 * i, 1, accounted=False)
    for s in range(40):
        tb.free(1000 + s, 0x1000 + 0x40 * 4 * s)
    trace = open_trace(tb.write(end_ns=SEC))
    for era in ("3.14", "5.16"):
        assert _run(trace, "objcg", era=era)["objcg"].list_lock_takes == 39, era


def test_reparent_repoints_the_caches_and_frees_them_at_their_last_page(survivors):
    """v5.3 on "survivors": offline deactivates (cpu_partial = min_partial = 0), shrinks
    (B to the node list), kills the page ref and re-points the cache to the root, so the
    memcg is not held at all. A goes to the node list at its first free and is discarded
    empty at 2 s + 3 ns; B at 2 s + 5 ns, when the page ref drops to 0: destroy."""
    m = survivors["reparent"]
    assert m.dying_memcgs_peak == 0
    assert m.reparent_moves == 1  # one cache re-pointed
    assert m.dead_caches_peak == 1
    assert m.destroyed_later == 1
    assert m.destroy_latency_max_s == pytest.approx(1.0 + 5e-9)
    assert m.slab_pages_freed == 2
    assert m.stranded_page_seconds == pytest.approx(2 * 1.0, rel=1e-6)
    # tryget + put per allocation (6 x 2) and the page ref of each new slab (2); after
    # the kill the two page puts are atomics, plus one page-counter charge of a batch
    assert m.percpu_ops == 6 * 2 + 2
    assert m.atomic_ops == 2 + 1
    assert m.rcu_grace_periods == 2  # deactivation + ref kill; the release needs none
    assert m.unsafe_destroy_windows == 0
    # the dead cache's structs are kept alive from 1 s to 2 s, no memcg's
    assert 0 < m.metadata_bytes_peak < survivors["way1"].metadata_bytes_peak


def _two_caches(tb):
    """memcg 100 has one object in each of two caches; offline at 1 s; the first cache's
    object dies at 2 s, the second's at 3 s; two CPUs."""
    tb.cache("dentry")
    tb.cache("inode")
    tb.mkdir(0, MEMCG)
    tb.alloc(10, 0x1000, MEMCG, cache=0)
    tb.alloc(11, 0x2000, MEMCG, cache=1)
    tb.offline(SEC, MEMCG)
    tb.free(2 * SEC, 0x1000, cache=0)
    tb.free(3 * SEC, 0x2000, cache=1)
    return open_trace(tb.write(end_ns=4 * SEC))


def test_way1_v40_destroys_all_dead_caches_at_css_free(trace_builder):
    trace = _two_caches(trace_builder(ncpus=2))
    rfc = _run(trace, "way1")["way1"]
    v40 = _run(trace, "way1", {"trigger": "css"})["way1"]
    # 2014 proposal: each cache after its own last page (1 s and 2 s after offline)
    assert rfc.destroy_latency_p50_s == pytest.approx(1.0)
    assert rfc.destroy_latency_max_s == pytest.approx(2.0)
    # v4.0: both when the memcg's last page goes, at 3 s
    assert v40.destroy_latency_p50_s == pytest.approx(2.0)
    assert v40.destroy_latency_max_s == pytest.approx(2.0)
    assert v40.destroyed_later == 2
    # v4.0 synchronises each deactivation with an IPI to both CPUs instead of a GP, and
    # frees the css after one GP; the proposal waits 2 GPs per cache
    assert v40.flush_ipis == rfc.flush_ipis + 2 * 2
    assert (rfc.rcu_grace_periods, v40.rcu_grace_periods) == (4, 1)
    # the pages go at each last free either way; the first dead cache's structs stay 1 s
    # longer (of the 4 s trace)
    assert v40.pinned_page_seconds == pytest.approx(rfc.pinned_page_seconds)
    # metadata: the memcg is held 1 s -> 3 s (its pages) in both; the dead caches 1 s ->
    # 2 s and 1 s -> 3 s (proposal) or both to 3 s (v4.0), over a 4 s trace
    cost = metadata_costs({}, ncpu=2)
    assert rfc.metadata_bytes_avg == pytest.approx((2 * cost.memcg + 3 * cost.cache) / 4)
    assert v40.metadata_bytes_avg == pytest.approx((2 * cost.memcg + 4 * cost.cache) / 4)
    assert rfc.metadata_bytes_peak == v40.metadata_bytes_peak == cost.memcg + 2 * cost.cache


def _empty_at_offline(tb):
    """Slab A full (4 objects), slab B emptied on the CPU before offline; after the
    offline the root (unaccounted) allocates one object."""
    tb.cache()
    tb.mkdir(0, MEMCG)
    for i in range(5):
        tb.alloc(10 + i, 0x1000 + 0x100 * i, MEMCG)
    tb.free(20, 0x1400)  # B's only object
    tb.offline(SEC, MEMCG)
    tb.alloc(SEC + SEC // 2, 0x9000, 1, accounted=False)
    return open_trace(tb.write(end_ns=2 * SEC))


def test_way3_moves_empty_slabs_for_the_parent_to_reuse(trace_builder):
    trace = _empty_at_offline(trace_builder())
    parent = _run(trace, "way3")["way3"]
    drop = _run(trace, "way3", {"empties": "drop"})["way3"]
    # parent: A and empty B move; root's nr_partial 1 < min_partial 5 keeps B, and the
    # root's allocation reuses it. drop: B is shrunk away, the root needs a new slab.
    assert (parent.reparent_moves, drop.reparent_moves) == (2, 1)
    assert (parent.slab_pages_freed, drop.slab_pages_freed) == (0, 1)
    assert (parent.slab_pages_allocated, drop.slab_pages_allocated) == (2, 3)
    for m in (parent, drop):
        # A, still full of the dead memcg's objects in the root cache, is stranded whole
        assert m.stranded_slab_bytes_end == PAGE and m.stranded_object_bytes_end == 0
        assert m.dying_memcgs_peak == 0 and m.metadata_bytes_peak == 0


def test_dead_memcgs_objects_in_a_shared_slab_are_stranded(trace_builder):
    """memcgs 100 and 101 put two objects each into one shared objcg slab; 100 goes
    offline at 1 s; all live to the end (10 s). The slab is mixed: 2 x 192 B held."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, MEMCG)
    tb.mkdir(1, 101)
    for i, g in enumerate((MEMCG, 101, MEMCG, 101)):
        tb.alloc(10 + i, 0x1000 + 0x100 * i, g)
    tb.offline(SEC, MEMCG)
    ms = _run(open_trace(tb.write(end_ns=10 * SEC)))
    obj = ms["objcg"]
    assert obj.stranded_object_bytes_end == obj.stranded_bytes_end == 2 * 192
    assert obj.stranded_slab_bytes_peak == 0
    assert obj.stranded_page_seconds == pytest.approx(2 * 192 * 9 / PAGE, rel=1e-6)
    # one objcg of the dead memcg lives: obj_cgroup 48 + percpu_ref_data 56 + 8 per CPU
    assert obj.metadata_bytes_end == 48 + 56 + 8
    assert obj.dying_memcgs_peak == 0
    # With a cache per memcg, 100's two objects hold its own slab whole.
    for name in ("current", "way1", "way4", "reparent"):
        assert ms[name].stranded_slab_bytes_end == PAGE, name
        assert ms[name].stranded_object_bytes_end == 0, name
    # way3 moves that slab into the root cache, where it is still 100's alone
    assert ms["way3"].stranded_slab_bytes_end == PAGE
    assert obj.footprint_bytes_end == PAGE < ms["current"].footprint_bytes_end == 2 * PAGE


def test_a_dying_child_holds_its_offline_parent(trace_builder):
    """Memcg 200 has child 100; 100 allocates one object that is never freed, goes offline
    at 1 s, then 200 at 2 s. A child's css holds its parent's until its own css_free, so
    while 100 is held (by its page before v5.3) 200 is dying too: 2 dying memcgs, and the
    metadata of two mem_cgroups. Designs that move the charge away at offline (way3,
    reparent, objcg) leave neither dying."""
    tb = trace_builder()
    tb.cache()
    tb.mkdir(0, 200)
    tb.mkdir(1, 100, parent=200, level=2)
    tb.alloc(10, 0x1000, 100)
    tb.offline(1 * SEC, 100)
    tb.offline(2 * SEC, 200)
    m = _run(open_trace(tb.write(end_ns=3 * SEC)))
    for name in ("current", "way1", "way2", "way4"):
        assert m[name].dying_memcgs_end == 2, name
    for name in ("way3", "reparent", "objcg"):
        assert m[name].dying_memcgs_peak == 0, name
    one_memcg = m["current"].metadata_bytes_end - m["way3"].metadata_bytes_end
    assert one_memcg > 0

