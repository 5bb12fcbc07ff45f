"""The replay's what-ifs (kmemtrace/replay/whatif.py) on hand scenarios.

Starting from the kernel's state: a cache with 3 slabs of 4 and 8 "objects" at the
first /sys/kernel/slab sample (which counts the CPU slab's free slots as in use: the
prelude takes half of the one CPU slab, 2, as free); the trace then frees two objects it
never allocated (one by kmem_cache_free, one by kfree, whose cache only the slab page
tells) and allocates and frees one of its own; the kernel then reports 6 "objects". On
paper: the prelude fills 12 slots and keeps 5, the most the last sample leaves room for
(its 6 "objects", less the CPU slab taken as half free, 2, plus the one old object the
trace frees by name), the two old frees leave 3 objects, none of the slabs empties.
"""

import numpy as np

from kmemtrace.metrics import slab_samples
from kmemtrace.replay.engine import replay
from kmemtrace.replay.whatif import kernel_start, map_cpus
from kmemtrace.strategies import select
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import SAMPLE_HAS_CPU_FIELDS, EventKind, empty_columns
from kmemtrace.trace.writer import TraceWriter

T0 = 1_000_000_000
PAGE = 0xFFFF_8880_0010_0000  # one 4 KiB slab page of cache 0
OLD, OLD_KFREE, NEW = PAGE, PAGE + 128, PAGE + 64


def _trace(path, rows=None, ncpus=1, step=1000, more_caches=(), **cache):
    rows = rows or [  # (kind, ptr, cache_id, aux, aux2[, cpu])
        (EventKind.SLAB_SAMPLE, 0, 0, 3, 8),
        (EventKind.FREE, OLD, 0, 0, 0),
        (EventKind.ALLOC, NEW, 0, 0, 0),
        (EventKind.FREE, OLD_KFREE, -1, 0, 0),
        (EventKind.FREE, NEW, 0, 0, 0),
        (EventKind.SLAB_SAMPLE, 0, 0, 3, 6),
    ]
    cols = empty_columns(len(rows))
    cols["ts_ns"][:] = T0 + step * np.arange(len(rows))
    cols["seq"][:] = np.arange(len(rows))
    for name, i in (("kind", 0), ("ptr", 1), ("cache_id", 2), ("aux", 3), ("aux2", 4)):
        cols[name][:] = [r[i] for r in rows]
    cols["cpu"][:] = [r[5] if len(r) > 5 else 0 for r in rows]
    for i, r in enumerate(rows):  # a 7th item: more columns by name
        for name, value in (r[6] if len(r) > 6 else {}).items():
            cols[name][i] = value
    cols["memcg_id"][:] = 1
    cols["bytes"][cols["kind"] == EventKind.ALLOC] = 64
    meta = new_meta("synth", ncpus=ncpus)
    meta["caches"] = [{"id": 0, "name": "kmalloc-64", "object_size": 64, "size": 64,
                       "objs_per_slab": 4, "order": 0, "accounted": False} | cache,
                      *more_caches]
    meta["clock"] = {"start_ns": T0, "end_ns": T0 + step * len(rows)}
    with TraceWriter(path, meta) as writer:
        writer.append(cols)
    return TraceReader.open(path)


def _objcg_samples(trace, from_kernel_state=True):
    """Model beside kernel at the trace's two slab samples: objcg, SLUB 6.8."""
    run = replay(trace, select("objcg", {}), era="6.8", samples=2,
                 from_kernel_state=from_kernel_state).runs[0]
    return slab_samples(run)


def test_prelude_rebuilds_the_kernels_slabs_and_pairs_old_frees(tmp_path):
    trace = _trace(tmp_path / "t")
    pre = kernel_start(trace)
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    frees = pre["ptr"][pre["kind"] == EventKind.FREE]
    assert len(allocs) == 12 and len(frees) == 7
    kept = [p for p in allocs if p not in set(frees)]
    assert {OLD, OLD_KFREE} <= set(kept)  # the kfree found its cache by its slab page
    assert NEW not in set(allocs)


def test_seeded_replay_matches_the_kernel_where_an_empty_start_cannot(tmp_path):
    trace = _trace(tmp_path / "t")
    # started empty, the model knows only NEW's slab, kept (empty) as the CPU slab
    for seeded, objects, slabs in ((True, [5, 3], [3, 3]), (False, [0, 0], [0, 1])):
        s = _objcg_samples(trace, from_kernel_state=seeded)
        assert list(s["model_objects"]) == objects, seeded
        assert list(s["model_slabs"]) == slabs, seeded


def test_the_kernels_slabs_start_spread_over_its_cpus(tmp_path):
    """2 CPUs, 2 slabs of 4 reported full at the first sample (8 "objects": the kernel's
    two CPU slabs, whose free slots it counts as in use; the prelude takes each as half
    free), then each CPU allocates 2. On paper the kernel needs no new slab: the prelude
    keeps slots 0, 2, 5, 7 (two per slab), slab 0 is CPU 0's, slab 1 CPU 1's, and each
    CPU fills its own. A prelude on CPU 0 alone left CPU 1 without a slab: 3."""
    rows = [(EventKind.SLAB_SAMPLE, 0, 0, 2, 8, 0)]
    rows += [(EventKind.ALLOC, PAGE + 0x1000 * cpu + 64 * i, 0, 0, 0, cpu)
             for cpu in (0, 1) for i in range(2)]
    rows += [(EventKind.SLAB_SAMPLE, 0, 0, 2, 8, 0)]
    trace = _trace(tmp_path / "t", rows, ncpus=2)
    pre = kernel_start(trace)
    assert list(pre["cpu"][pre["kind"] == EventKind.ALLOC]) == [0] * 4 + [1] * 4
    assert list(pre["cpu"][pre["kind"] == EventKind.FREE]) == [0, 0, 1, 1]
    s = _objcg_samples(trace)
    assert list(s["model_objects"]) == [4, 8]
    assert list(s["model_slabs"]) == [2, 2]


def test_a_pre_recording_slab_freed_whole_empties_in_the_model(tmp_path):
    """``drop_caches`` on paper. The kernel reports 3 slabs of 4 and 10 "objects" (8 live:
    one CPU slab taken as half free); the trace frees the 4 objects of slab page A and 2 of
    page B, all allocated before it began, and the kernel then reports 1 slab of 2. The
    prelude puts A's 4 on one model slab and B's 2 on another, the 2 unknown survivors
    (slots 0 and 3 of the third slab, the CPU slab) on neither. With no CPU partial budget
    and min_partial 0 the model discards a slab when it empties: A, then B, leaving the
    CPU slab and its 2. At random among the starting slabs (the old prelude) the 6 old
    pointers emptied a slab only if the 2 survivors shared slab 1 (1 chance in 28)."""
    a, b = PAGE + 0x1000, PAGE + 0x2000
    rows = [(EventKind.SLAB_SAMPLE, 0, 0, 3, 10)]
    rows += [(EventKind.FREE, p, 0, 0, 0) for p in (a, a + 64, a + 128, a + 192, b, b + 64)]
    rows += [(EventKind.SLAB_SAMPLE, 0, 0, 1, 2)]
    trace = _trace(tmp_path / "t", rows, cpu_partial=0, min_partial=0)
    pre = kernel_start(trace)
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    assert list(allocs[:6]) == [a, a + 64, a + 128, a + 192, b, b + 64]
    frees = set(pre["ptr"][pre["kind"] == EventKind.FREE])
    assert frees == {allocs[i] for i in (6, 7, 9, 10)}  # B's free slots, C's but 0 and 3
    s = _objcg_samples(trace)
    assert list(s["model_slabs"]) == [3, 1]
    assert list(s["model_objects"]) == [8, 2]


def test_unknown_survivors_even_out_the_real_slabs_before_adding_one(tmp_path):
    """2 slabs of 4 and 8 "objects" (6 live); the trace frees 3 old objects of page A and
    2 of page B, so both kernel slabs are known and the 6th survivor, never seen, must be
    on one of them. Levelled as the even spread levels unknown slabs: B (2) gets it, so
    that each holds 3: kept are A's slots 0-2 and B's 4-6; slots 3 and 7 are freed. The
    model starts with the kernel's 2 slabs, not 3."""
    a, b = PAGE + 0x1000, PAGE + 0x2000
    rows = [(EventKind.SLAB_SAMPLE, 0, 0, 2, 8)]
    rows += [(EventKind.FREE, p, 0, 0, 0) for p in (a, a + 64, a + 128, b, b + 64)]
    pre = kernel_start(_trace(tmp_path / "t", rows))
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    assert len(allocs) == 8
    assert list(allocs[[0, 1, 2, 4, 5]]) == [a, a + 64, a + 128, b, b + 64]
    assert list(pre["ptr"][pre["kind"] == EventKind.FREE]) == list(allocs[[3, 7]])


def test_no_more_old_objects_than_the_kernel_had(tmp_path):
    """1 slab of 4, 2 "objects" at the start, and the trace frees 3 old pointers (one of
    them allocated where no BPF program saw it): at most 2 were live, the first 2 freed
    get the prelude's objects (slots 0, 1), the third's free is unmatched."""
    rows = [(EventKind.SLAB_SAMPLE, 0, 0, 1, 2)]
    rows += [(EventKind.FREE, p, 0, 0, 0) for p in (PAGE + 128, PAGE, PAGE + 64)]
    pre = kernel_start(_trace(tmp_path / "t", rows))
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    assert list(allocs[:2]) == [PAGE, PAGE + 128] and PAGE + 64 not in set(allocs)
    assert len(allocs) == 4 and sum(pre["kind"] == EventKind.FREE) == 2


def test_later_samples_cap_the_starts_survivors(tmp_path):
    """A churning cache (``bio-184`` on paper), 4 objects a slab, 2 CPU partial slabs
    (``cpu_partial`` 4: ``DIV_ROUND_UP(2 * 4, 4)``). The kernel reports 2 slabs of 4 and 8
    "objects" at the start, which the first prelude read as 6 survivors (one CPU slab half
    free). Then, a second apart, the trace allocates 6 objects, the kernel still reports 8
    "objects" on 2 slabs, and the trace frees the 6. ``objects`` counts every slab a CPU
    holds as full: at that sample, at most 2 (8 "objects" / 4), CPU 0's active slab taken
    as half free (2) and the other, on its partial list, as empty (4): 2 live, fewer than
    the trace's own 6, so no survivor. The prelude keeps none, and the model holds the
    kernel's 2 slabs at both samples (one of them empty on CPU 0's partial list at the
    start). With every CPU slab counted full (the last prelude's bound: 8 - 6) it kept 2
    (slots 0 and 3), which no free ever reached."""
    rows = [(EventKind.SLAB_SAMPLE, 0, 0, 2, 8)]
    new = [PAGE + 0x4000 + 64 * i for i in range(6)]
    rows += [(EventKind.ALLOC, p, 0, 0, 0) for p in new]
    rows += [(EventKind.SLAB_SAMPLE, 0, 0, 2, 8)]
    rows += [(EventKind.FREE, p, 0, 0, 0) for p in new]
    rows += [(EventKind.SLAB_SAMPLE, 0, 0, 1, 4)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=4, min_partial=0)
    pre = kernel_start(trace)
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    assert len(allocs) == 8 and set(allocs) == set(pre["ptr"][pre["kind"] == EventKind.FREE])
    assert list(_objcg_samples(trace)["model_slabs"])[:2] == [2, 2]


def _held_sample(slabs, objects, cpu_slabs, partial, objects_partial):
    return (EventKind.SLAB_SAMPLE, objects_partial, 0, slabs, objects, 0,
            {"gfp": SAMPLE_HAS_CPU_FIELDS, "bytes": cpu_slabs, "pid": partial})


def _freed_slots(pre, cache_id=0):
    """The prelude's slots (in allocation order) that it frees again."""
    mine = pre["cache_id"] == cache_id
    allocs = pre["ptr"][mine & (pre["kind"] == EventKind.ALLOC)]
    slot = {int(p): i for i, p in enumerate(allocs)}
    return len(allocs), sorted(slot[int(p)] for p in pre["ptr"][mine & (pre["kind"]
                                                                        == EventKind.FREE)])


def test_sampled_cpu_slabs_set_the_start_exactly(tmp_path):
    """4 objects a slab, 1 CPU, ``cpu_partial`` 8 (up to ``DIV_ROUND_UP(2 * 8, 4)`` = 4
    CPU partial slabs). The kernel says, twice a second apart: 5 slabs, 14 "objects", and
    what the CPUs hold: ``cpu_slabs`` 1, ``partial`` 2, ``objects_partial`` 2. On paper:
    5 - 2 - 1 = 2 full slabs (8 objects), 2 node-partial slabs with 2 objects, packed on
    the first (2, 0), and CPU 0's active slab, empty (its 4 slots counted full by
    ``objects``): 14 - 4 = 10 survivors, laid out 4, 4, 2, 0, 0. The prelude allocates the
    20 slots and frees slots 10-19. (Before: the active slab half full, the node-partial
    objects spread 1 and 1, 12 survivors: slots 9-11, 13-15 and 18-19 freed.) Without the
    fields the prelude guesses the CPU-held slabs: 3 of them (``min(5, 1 + 4, 14 // 4)``),
    2 of them empty CPU partial slabs and the active one half free, 10 free slots, and it
    keeps 4 objects."""
    rows = [_held_sample(5, 14, 1, 2, 2), _held_sample(5, 14, 1, 2, 2)]
    pre = kernel_start(_trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8,
                              min_partial=5))
    assert _freed_slots(pre) == (20, list(range(10, 20)))
    bare = [(EventKind.SLAB_SAMPLE, 0, 0, 5, 14)] * 2  # the same trace without the fields
    old = kernel_start(_trace(tmp_path / "b", bare, step=1_000_000_000, cpu_partial=8,
                              min_partial=5))
    assert sum(old["kind"] == EventKind.ALLOC) - sum(old["kind"] == EventKind.FREE) == 4


def test_a_static_cache_keeps_its_cpu_held_slabs_empty(tmp_path):
    """4 objects a slab, 1 CPU, budget 4 CPU partial slabs: 4 slabs, 16 "objects",
    ``cpu_slabs`` 3, nothing on the node list, twice a second apart, nothing traced
    (``tracefs_inode_cache`` on paper). On paper: 1 full slab kept, the 3 CPU-held ones
    empty (slots 4-15 freed). Replayed, the prelude's frees park slabs 1 and 2 on CPU 0's
    partial list (each was full: ``put_cpu_partial``; emptied there, SLUB 6.8+ leaves
    them) and slab 3 stays CPU 0's active slab: 4 slabs, as the kernel says, though 3 are
    empty. A round between the two that did not read the CPU fields (the recorder reads
    them every 5th round) does not bound the start: its CPU-held slabs are unknown."""
    for name, rows in (("t", [_held_sample(4, 16, 3, 0, 0), _held_sample(4, 16, 3, 0, 0)]),
                       ("mixed", [_held_sample(4, 16, 3, 0, 0),
                                  (EventKind.SLAB_SAMPLE, 0, 0, 4, 16),
                                  _held_sample(4, 16, 3, 0, 0)])):
        trace = _trace(tmp_path / name, rows, step=1_000_000_000, cpu_partial=8,
                       min_partial=5)
        assert _freed_slots(kernel_start(trace)) == (16, list(range(4, 16)))
        s = _objcg_samples(trace)
        assert s["model_slabs"].tolist() == s["kernel_slabs"].tolist() == [4] * len(rows)


def test_a_quiet_later_sample_shows_the_starts_long_lived_objects(tmp_path):
    """``bio-184`` in churn run 1 on paper. 4 objects a slab, 1 CPU: at the start the
    kernel has 3 slabs, all CPU-held (``cpu_slabs`` 3, 12 "objects"): none proven live.
    At 2 s it says 3 slabs, 9 "objects", ``cpu_slabs`` 2 and 1 node-partial slab with 1
    object: that object is live, and not the trace's (nothing of it is live then), so the
    start had it: 1 survivor, on the first slab (slots 1-11 freed). When the trace has an
    object of its own in flight across that sample's reads (allocated 1 ms before, freed
    1 ms after), the node-partial object may be that one: no survivor (slots 0-11)."""
    later = _held_sample(3, 9, 2, 1, 1)

    def rows(in_flight):
        out = [_held_sample(3, 12, 3, 0, 0)]
        if in_flight:
            out.append((EventKind.ALLOC, PAGE + 0x8000, 0, 0, 0, 0,
                        {"ts_ns": T0 + 2_000_000_000 - 1_000_000}))
        out.append((*later[:6], {**later[6], "ts_ns": T0 + 2_000_000_000}))
        if in_flight:
            out.append((EventKind.FREE, PAGE + 0x8000, 0, 0, 0, 0,
                        {"ts_ns": T0 + 2_000_000_000 + 1_000_000}))
        return out

    quiet = kernel_start(_trace(tmp_path / "q", rows(False), step=1_000_000_000))
    assert _freed_slots(quiet) == (12, list(range(1, 12)))
    busy = kernel_start(_trace(tmp_path / "b", rows(True), step=1_000_000_000))
    assert _freed_slots(busy) == (12, list(range(12)))


def test_an_address_that_changed_cache_counts_on_its_own_cache(tmp_path):
    """Cache 1 allocates X and never frees it (its free reached no program); cache 0 later
    allocates X (the page changed cache) and frees it. 4 a slab, 1 CPU. Cache 0's kernel
    says 2 slabs, 8 "objects", ``cpu_slabs`` 1 (1 full slab, 1 CPU-held) at the start and
    again at 4 s. On paper its net is +1 then 0: the floor is 8 - 4 - 0 = 4, and the start
    keeps the full slab's 4 objects (slots 4-7 freed). Counted as a reallocation of cache 0's own
    object (the old rule: the ALLOC as 0, the FREE as -1), net fell to -1 and proved a
    fifth survivor the kernel never had (slot 4 kept too)."""
    x = PAGE + 0x4000
    more = [{"id": 1, "name": "kmalloc-128", "object_size": 128, "size": 128,
             "objs_per_slab": 4, "order": 0, "accounted": False}]
    rows = [_held_sample(2, 8, 1, 0, 0), (EventKind.ALLOC, x, 1, 0, 0),
            (EventKind.ALLOC, x, 0, 0, 0), (EventKind.FREE, x, 0, 0, 0),
            _held_sample(2, 8, 1, 0, 0)]
    pre = kernel_start(_trace(tmp_path / "t", rows, more_caches=more, step=1_000_000_000))
    assert _freed_slots(pre) == (8, [4, 5, 6, 7])


def test_a_kfree_is_not_named_after_a_later_owner_of_its_page(tmp_path):
    """``kmalloc-cg-96`` in classic run 1 on paper. Cache 1 (4 a slab) has 1 slab and 4
    "objects" at the start. The trace ``kfree``s two old objects of another cache on
    pages A and B, whose slabs then go back to the page allocator, and cache 1 later
    allocates on both pages. Only an allocation before a free can name its cache: the two
    frees stay unmatched, and cache 1 starts on the kernel's 1 slab (4 slots, 2 kept,
    the CPU slab taken as half free). Named after the later owner (the old rule: the
    page's first allocation anywhere in the trace), A and B were cache 1's survivors on
    2 slabs where the kernel had 1."""
    a, b = PAGE + 0x1000, PAGE + 0x2000
    rows = [(EventKind.SLAB_SAMPLE, 0, 1, 1, 4), (EventKind.FREE, a, -1, 0, 0),
            (EventKind.FREE, b, -1, 0, 0), (EventKind.SLAB_SAMPLE, 0, 1, 1, 4),
            (EventKind.ALLOC, a + 64, 1, 0, 0), (EventKind.ALLOC, b + 64, 1, 0, 0)]
    other = {"id": 1, "name": "kmalloc-cg-64", "object_size": 64, "size": 64,
             "objs_per_slab": 4, "order": 0, "accounted": False}
    trace = _trace(tmp_path / "t", rows, more_caches=[other])
    pre = kernel_start(trace)
    allocs = pre["ptr"][pre["kind"] == EventKind.ALLOC]
    assert len(allocs) == 4 and not {a, b} & set(allocs)
    assert sum(pre["kind"] == EventKind.FREE) == 2
    assert list(_objcg_samples(trace)["model_slabs"]) == [1, 1]


def test_cpu_mapping():
    cpu = np.array([0, 1, 0, 1, 0, 1])
    pid = np.array([10, 10, 11, 12, 13, 14])
    assert list(map_cpus(cpu, pid, 2, 2)) == list(cpu)  # the recorded host: identity
    assert list(map_cpus(cpu, pid, 2, 1)) == [0] * 6
    wide = map_cpus(cpu, pid, 2, 128)
    assert (wide % 2 == cpu).all() and (wide < 128).all()  # a split of the recorded CPU
    many = map_cpus(np.zeros(10_000, int), np.arange(10_000), 2, 128)
    assert len(np.unique(many)) == 64  # tasks of CPU 0 spread over all 64 of its CPUs
