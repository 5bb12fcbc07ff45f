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
from kmemtrace.model.state import (
    I_NR_PARTIAL,
    P_ACTIVE,
    P_PSLABS,
    S_INUSE,
    S_STATE,
    SL_CPU_ACTIVE,
)
from kmemtrace.replay.engine import replay
from kmemtrace.replay.whatif import kernel_start, map_cpus, unseen_frees
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


def _freed_slots(pre, cache=0):
    mine = pre["cache_id"] == cache
    allocs = pre["ptr"][mine & (pre["kind"] == EventKind.ALLOC)]
    slot = {int(p): i for i, p in enumerate(allocs)}
    return len(allocs), sorted(slot[int(p)] for p in pre["ptr"][mine & (pre["kind"] ==
                                                                       EventKind.FREE)])


def test_sampled_cpu_slabs_set_the_start_exactly(tmp_path):
    """4 objects a slab, 1 CPU, ``cpu_partial`` 8 (up to ``DIV_ROUND_UP(2 * 8, 4)`` = 4
    CPU partial slabs). The kernel says, twice a second apart: 5 slabs, 14 "objects", and
    what the CPUs hold: ``cpu_slabs`` 1, ``partial`` 2, ``objects_partial`` 2. On paper:
    5 - 2 - 1 = 2 full slabs (8 objects), 2 node-partial slabs with 2 objects (1 each), and
    CPU 0's active slab, whose objects ``objects`` counts full and nothing proves live:
    10 survivors, laid out 4, 4, 1, 1, 0. The prelude allocates the 20 slots and frees
    slots 9-11, 13-15 and 16-19; the model then holds the 2 node-partial slabs on the node
    list and the empty one as CPU 0's active slab, the kernel's 5 slabs at both samples.
    Without the fields the prelude had to guess the CPU-held slabs: 3 of them (``min(5,
    1 + 4, 14 // 4)``), 2 of them empty CPU partial slabs and the active one half free,
    10 free slots, so it kept 4 objects on two slabs that the kernel's 2 full slabs alone
    prove held at least 8."""
    rows = [_held_sample(5, 14, 1, 2, 2), _held_sample(5, 14, 1, 2, 2)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=5)
    assert _freed_slots(kernel_start(trace)) == (20, [9, 10, 11, 13, 14, 15, 16, 17, 18, 19])
    run = replay(trace, select("objcg", {}), era="6.8", samples=2,
                 from_kernel_state=True).runs[0]
    m, inst = run.model, run.model.inst_of[0, 0]
    active = m.pcpu[P_ACTIVE, inst, 0]
    assert m.inst[I_NR_PARTIAL, inst] == 2 and m.slab[S_INUSE, active] == 0
    assert m.slab[S_STATE, active] == SL_CPU_ACTIVE and m.pcpu[P_PSLABS, inst, 0] == 0
    assert list(slab_samples(run)["model_slabs"]) == [5, 5]
    bare = [(EventKind.SLAB_SAMPLE, 0, 0, 5, 14)] * 2  # the same trace without the fields
    old = kernel_start(_trace(tmp_path / "b", bare, step=1_000_000_000, cpu_partial=8,
                              min_partial=5))
    assert sum(old["kind"] == EventKind.ALLOC) - sum(old["kind"] == EventKind.FREE) == 4


def test_a_static_cache_keeps_its_cpu_partial_slabs(tmp_path):
    """4 objects a slab, 1 CPU: 4 slabs, 16 "objects", ``cpu_slabs`` 3, nothing on the node
    list, twice a second apart, nothing traced (``tracefs_inode_cache`` on paper). On
    paper: 1 full slab (4 survivors); CPU 0's active slab and its 2 CPU partial slabs,
    whose objects nothing proves live: slots 4-15 freed. Laid out where the kernel had
    them, the 2 empty CPU partial slabs stay parked, as in the kernel, which keeps them
    until a drain: the model holds the kernel's 4 slabs at both samples. Made by events
    alone, the empty slabs went to the node list and were discarded past ``min_partial``
    (here 0): 1 slab of the kernel's 4."""
    rows = [_held_sample(4, 16, 3, 0, 0), _held_sample(4, 16, 3, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=0)
    assert _freed_slots(kernel_start(trace)) == (16, list(range(4, 16)))
    assert list(_objcg_samples(trace)["model_slabs"]) == [4, 4]
    bare = [(EventKind.SLAB_SAMPLE, 0, 0, 4, 16)] * 2
    old = kernel_start(_trace(tmp_path / "b", bare, step=1_000_000_000, cpu_partial=8,
                              min_partial=5))
    assert sum(old["kind"] == EventKind.ALLOC) - sum(old["kind"] == EventKind.FREE) == 2


def test_a_cache_shrunk_before_its_first_sample_keeps_what_its_cpus_retook(tmp_path):
    """4 objects a slab, 1 CPU, recorded with ``--shrink-at-start``: the kernel shrank the
    cache right before the sample, which says 5 slabs, 20 "objects", ``cpu_slabs`` 3 of
    which 2 on CPU 0's partial list (``cpu_partial_start``), nothing on the node list,
    twice a second apart. The shrink left no slab on a CPU and none empty, so the CPU
    slabs were taken since: the 2 partial ones by a free from a full slab (3 objects
    each), the active one for an allocation (1 object, the least it holds). On paper: 2
    full slabs, 20 - 2 - 3 = 15 survivors. The replay's shrink at that row flushes the
    CPUs and finds no slab empty: the kernel's 5 slabs, none left on the CPU. Bounded as
    an unshrunk trace is (the full slabs' 8 proven), the CPU-held slabs would start empty,
    and that shrink would discard all 3."""
    rows = [_held_sample(5, 20, 3, 0, 0), _held_sample(5, 20, 3, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=0,
                   shrunk_at_start=True, cpu_partial_start=[2])
    slots, freed = _freed_slots(kernel_start(trace))
    assert (slots, len(freed)) == (20, 5)
    run = replay(trace, select("objcg", {}), era="6.8", samples=2,
                 from_kernel_state=True).runs[0]
    m, inst = run.model, run.model.inst_of[0, 0]
    assert list(slab_samples(run)["model_slabs"]) == [5, 5]
    assert m.pcpu[P_ACTIVE, inst, 0] == -1 and m.pcpu[P_PSLABS, inst, 0] == 0
    unshrunk = _trace(tmp_path / "u", rows, step=1_000_000_000, cpu_partial=8,
                      min_partial=0, cpu_partial_start=[2])
    assert len(_freed_slots(kernel_start(unshrunk))[1]) == 12


def test_a_shrunk_cache_starts_at_its_first_sample(tmp_path):
    """4 objects a slab, 2 CPUs, ``min_partial`` 5 (empty slabs stay on the node list),
    recorded with ``--shrink-at-start``. Before the cache's first sample the trace frees
    an old object and CPU 0 allocates and frees one, while CPU 1 allocates N at an address
    on the old slab's page; the sample, right after the shrink, reads 1 slab holding 3
    objects on the node list; then N is freed and the kernel reports 1 slab, 2 objects. On
    paper the start is that sample, N one of its 3 objects on its page: 1 slab, then 1.
    Replayed on a start laid out from the sample, the events before it ran again: CPU 0
    took the slab for its allocation, N went on a new slab for CPU 1, which the shrink
    kept (N was live) and N's free left empty on the node list: 2 slabs, then 2
    (``seq_file`` in five study traces, +100 % to the end)."""
    old, a, n = PAGE, PAGE, PAGE + 3 * 64
    rows = [(EventKind.FREE, old, 0, 0, 0, 0), (EventKind.ALLOC, a, 0, 0, 0, 0),
            (EventKind.FREE, a, 0, 0, 0, 0), (EventKind.ALLOC, n, 0, 0, 0, 1),
            _held_sample(1, 3, 0, 1, 3), (EventKind.FREE, n, 0, 0, 0, 1),
            _held_sample(1, 2, 0, 1, 2)]
    trace = _trace(tmp_path / "t", rows, ncpus=2, step=1_000_000_000, cpu_partial=0,
                   min_partial=5, shrunk_at_start=True)
    pre = kernel_start(trace)
    kept = set(pre["ptr"][pre["kind"] == EventKind.ALLOC]) - set(
        pre["ptr"][pre["kind"] == EventKind.FREE])
    assert len(kept) == 3 and n in kept
    result = replay(trace, select("objcg", {}), era="6.8", samples=2,
                    from_kernel_state=True)
    assert list(slab_samples(result.runs[0])["model_slabs"]) == [1, 1]
    assert any("4 allocations and frees before it" in note for note in result.notes)


def test_the_start_keeps_what_its_samples_prove_when_the_trace_outruns_them(tmp_path):
    """4 objects a slab, 1 CPU, shrunk at start: the first sample reads 1 slab holding 1
    object on the node list; the trace then allocates 4 objects and the next sample reads
    2 "objects": the trace missed frees (a merged cache's ``kfree_rcu`` batches), and its
    net leaves room for 2 - 4 = -2 at the start. On paper the sample proves 1 object
    there, and its slab is the kernel's. Taken as the room, the start kept none, and the
    replay's shrink at the first sample discarded the slab the kernel had
    (``dmaengine-unmap-2``: -100 % there)."""
    rows = [_held_sample(1, 1, 0, 1, 1), *[(EventKind.ALLOC, PAGE + 0x1000 + 64 * i, 0, 0, 0)
                                           for i in range(4)],
            _held_sample(1, 2, 0, 1, 2)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=0, min_partial=5,
                   shrunk_at_start=True)
    assert _freed_slots(kernel_start(trace)) == (4, [1, 2, 3])
    assert _objcg_samples(trace)["model_slabs"][0] == 1


def test_a_shrunk_caches_cpu_slabs_each_keep_what_they_were_retaken_with(tmp_path):
    """8 objects a slab, 2 CPUs, shrunk at start: the sample reads 2 slabs, 16 "objects",
    both CPU-held, one on CPU 0's partial list (``cpu_partial_start``), and the later
    sample leaves room for 8 survivors (the active slab taken as half free). On paper the
    CPU partial slab holds 7 (one slot freed put it there) and the active one 1: 8, on
    both slabs, which the replay's shrink at the sample keeps. Given as the excess over a
    profile of empty CPU slabs, the 8 filled the active slab and the shrink discarded the
    partial one (``names_cache``: 1 slab where the kernel had 2)."""
    rows = [_held_sample(2, 16, 2, 0, 0), _held_sample(2, 16, 2, 0, 0)]
    trace = _trace(tmp_path / "t", rows, ncpus=2, step=1_000_000_000, objs_per_slab=8,
                   cpu_partial=8, min_partial=5, shrunk_at_start=True, cpu_partial_start=[1, 0])
    slots, freed = _freed_slots(kernel_start(trace))
    assert (slots, len(freed)) == (16, 8)
    assert list(_objcg_samples(trace)["model_slabs"]) == [2, 2]


def test_empty_cpu_slabs_take_the_allocations_the_kernel_gave_them(tmp_path):
    """A churning cache (``bio-184`` on paper), 4 objects a slab, 1 CPU: 3 slabs, 12
    "objects", all 3 CPU-held (active and 2 CPU partial), none proven live. The trace
    allocates 16 objects and the kernel then reports 4 slabs, 16 "objects", ``cpu_slabs``
    1. On paper the 16 fill the 3 empty slabs and one new one: the model's 4 slabs. With
    the CPU-held slabs taken as full but one slot, and the active one half full (the
    rule before), the 3 slabs had 4 free slots and the model needed 3 new slabs: 6."""
    new = [PAGE + 0x4000 + 64 * i for i in range(16)]
    rows = [_held_sample(3, 12, 3, 0, 0)]
    rows += [(EventKind.ALLOC, p, 0, 0, 0) for p in new]
    rows += [_held_sample(4, 16, 1, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000, cpu_partial=8, min_partial=5)
    assert _freed_slots(kernel_start(trace)) == (12, list(range(12)))
    assert list(_objcg_samples(trace)["model_slabs"]) == [3, 4]


def test_a_round_without_the_fields_bounds_as_the_sampled_ones(tmp_path):
    """The static cache above with a round between the two that did not read the CPU
    fields (the recorder reads them every 5th round). Its CPU-held slabs are estimated,
    ``min(4, 1 + 4, 16 // 4)`` = 4, but taken as the sampled ones are, the active one half
    free and the 3 others free by one slot: room for 11 survivors at most, more than the
    4 the sampled rounds prove, so the start is the same as without that round. Taken as
    empty there (as in a trace without the fields), that round left room for 2."""
    rows = [_held_sample(4, 16, 3, 0, 0), (EventKind.SLAB_SAMPLE, 0, 0, 4, 16),
            _held_sample(4, 16, 3, 0, 0)]
    pre = kernel_start(_trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8,
                              min_partial=5))
    assert _freed_slots(pre) == (16, list(range(4, 16)))


def test_own_stamps_pair_a_sample_with_the_net_at_its_reads(tmp_path):
    """Cache 0 (4 a slab, 1 CPU): 2 slabs, 8 "objects", ``cpu_slabs`` 1, nothing on the
    node list at the start and again a second later; 0.2 s before the second sample the
    trace allocated 4 objects it keeps. On paper: the full slab proves 4 live at the
    start; at the second sample the CPU slab, taken as half free, leaves room for 6 live,
    4 of them the trace's, so at most 2 survivors, kept on the full slab (slots 0 and 1),
    the 6 other slots freed. A recorder that stamped a round once (cache 1 read with
    cache 0, same stamp) could have read cache 0 up to a quarter second after its stamp,
    so the net is taken at its lowest within that, 0 before the allocations: room for 6,
    and the 4 proven are kept (slots 0-3)."""
    more = [{"id": 1, "name": "kmalloc-128", "object_size": 128, "size": 128,
             "objs_per_slab": 4, "order": 0, "accounted": False}]

    def rows(c1_lag):
        def at(row, t):
            return (*row[:6], {**(row[6] if len(row) > 6 else {}), "ts_ns": t})

        out = [at(_held_sample(2, 8, 1, 0, 0), T0),
               at((EventKind.SLAB_SAMPLE, 0, 1, 1, 4, 0), T0 + c1_lag)]
        out += [at((EventKind.ALLOC, PAGE + 0x4000 + 64 * i, 0, 0, 0, 0), T0 + 800_000_000)
                for i in range(4)]
        return [*out, at(_held_sample(2, 8, 1, 0, 0), T0 + 1_000_000_000),
                at((EventKind.SLAB_SAMPLE, 0, 1, 1, 4, 0), T0 + 1_000_000_000 + c1_lag)]

    def freed_slots(path, c1_lag):
        return _freed_slots(kernel_start(_trace(path, rows(c1_lag), more_caches=more,
                                                step=1_000_000_000)))[1]

    assert freed_slots(tmp_path / "own", 1_000_000) == [2, 3, 4, 5, 6, 7]
    assert freed_slots(tmp_path / "round", 0) == [4, 5, 6, 7]


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


def test_samples_that_prove_missed_frees_keep_the_start_whole(tmp_path):
    """4 objects a slab, 1 CPU. The kernel reports 5 slabs, 20 "objects", ``cpu_slabs`` 1,
    nothing on the node list; a second later 1 slab, 4 "objects", ``cpu_slabs`` 1; the
    trace holds no event of the cache (``kmalloc-192`` under ``drop_caches``: its objects
    went by ``kfree_rcu`` batches). On paper: the 4 full slabs prove 16 live at the start;
    the second sample leaves room for 4 at most (the active slab may be full), and the
    trace freed none of the old objects: 12 frees the trace missed. The prelude keeps the
    16 (slots 16-19, the active slab, freed) and the model starts on the kernel's 5 slabs.
    A second sample whose reads disagree (``objects`` is not the capacity off the node
    list plus ``objects_partial``) proves nothing, and the start is capped as before."""
    rows = [_held_sample(5, 20, 1, 0, 0), _held_sample(1, 4, 1, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=5)
    assert unseen_frees(trace) == {0: 12}
    assert _freed_slots(kernel_start(trace)) == (20, [16, 17, 18, 19])
    assert list(_objcg_samples(trace)["model_slabs"]) == [5, 5]  # it cannot see the drop
    torn = [_held_sample(5, 20, 1, 0, 0), _held_sample(1, 3, 1, 0, 0)]
    assert unseen_frees(_trace(tmp_path / "b", torn, step=1_000_000_000, cpu_partial=8,
                               min_partial=5)) == {}


def test_missed_frees_count_past_a_slab_however_large_the_start(tmp_path):
    """4 objects a slab, 1 CPU. The kernel reports 51 slabs, 204 "objects", ``cpu_slabs``
    1, nothing on the node list; a second later 48 slabs, 192 "objects", ``cpu_slabs`` 1;
    the trace holds no event of the cache. On paper the 50 full slabs prove 200 live at
    the start and the second sample leaves room for 192: 8 frees missed, two slabs' worth,
    4 % of the start. A cushion of 5 % (10) hid them (``tw_sock_TCP``: 454 of 23 073)."""
    rows = [_held_sample(51, 204, 1, 0, 0), _held_sample(48, 192, 1, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=5)
    assert unseen_frees(trace) == {0: 8}


def test_named_frees_of_old_objects_are_counted_once_in_the_proof(tmp_path):
    """4 objects a slab, 1 CPU. The kernel reports 9 slabs, 36 "objects", ``cpu_slabs`` 1,
    nothing on the node list; the trace then frees 16 old objects by ``kmem_cache_free``
    (4 whole slabs of them); a second later the kernel reports 1 slab, 4 "objects",
    ``cpu_slabs`` 1. On paper: the 8 full slabs prove 32 live at the start, the trace
    freed 16, so 16 were still live unless frees went unseen; the second sample leaves
    room for 4 (its active slab may be full): 12 frees the trace missed (``inode_cache``
    in classic run 1: 3 326 proven, 1 708 old objects freed by name, room for 1 826).
    The strict bound already counts the 16 named frees; counted again, they hid the 12."""
    frees = [(EventKind.FREE, PAGE + k * 4096 + j * 64, 0, 0, 0) for k in range(4)
             for j in range(4)]
    rows = [_held_sample(9, 36, 1, 0, 0), *frees, _held_sample(1, 4, 1, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000, cpu_partial=8, min_partial=5)
    assert unseen_frees(trace) == {0: 12}


def test_survivors_proven_later_spread_evenly_over_the_cpu_partial_slabs(tmp_path):
    """4 objects a slab, 1 CPU. The first sample: 5 slabs, 20 "objects", all 5 CPU-held
    (the active slab and 4 CPU partial ones), so it proves nothing live. A second later
    the CPU has flushed 4 of them to the node list: 1 CPU slab, 4 node-partial slabs
    holding 8 objects; the trace has no event, so those 8 were live at the start, on the
    CPU-held slabs. On paper: the active slab takes 4 (its room); the other 4 are shared
    evenly over the CPU partial slabs, each with room for 3 (a slab goes there at a
    free): 4, 1, 1, 1, 1, and no CPU partial slab starts empty, as none of the kernel's
    4 flushed slabs was. Each filled before the next, they were 4, 3, 1, 0, 0: two empty
    slabs that a drain discards (``pid`` in classic run 2: 7 of 20 slabs, -35 %)."""
    rows = [_held_sample(5, 20, 5, 0, 0), _held_sample(5, 12, 1, 4, 8)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=8, min_partial=5)
    n, freed = _freed_slots(kernel_start(trace))
    assert n == 20
    assert list(4 - np.bincount(np.array(freed) // 4, minlength=5)) == [4, 1, 1, 1, 1]


def test_what_the_trace_frees_before_the_first_sample_was_live_at_the_start(tmp_path):
    """4 objects a slab, 1 CPU, no CPU partial list, ``min_partial`` 0. At the start the
    kernel has 3 full slabs of old objects; the trace frees slab A's 4 before the first
    sample, which reads 2 slabs and 8 "objects" (A emptied and was discarded); then it
    frees B's and C's 8, and the kernel reports nothing left. On paper: 12 were live at
    the start, all 12 pointers the trace frees sit on their 3 slabs, A's frees empty A
    and the model shows the kernel's 2 slabs at the first sample and 0 at the second.
    Capped at the first sample's 8, the prelude left C out, A's frees emptied A all the
    same, and the model showed 1 slab where the kernel had 2 (``tw_sock_TCP``: 1 090
    TIME_WAIT sockets freed before the first sample, 61 slabs short to the end)."""
    def frees(slabs):
        return [(EventKind.FREE, PAGE + k * 4096 + j * 64, 0, 0, 0) for k in slabs
                for j in range(4)]
    rows = [*frees([0]), _held_sample(2, 8, 0, 0, 0), *frees([1, 2]),
            _held_sample(0, 0, 0, 0, 0)]
    trace = _trace(tmp_path / "t", rows, step=1_000_000_000, cpu_partial=0, min_partial=0)
    assert _freed_slots(kernel_start(trace)) == (12, [])
    assert list(_objcg_samples(trace)["model_slabs"]) == [2, 0]


def test_the_first_rounds_cpu_partial_lists_place_the_starting_slabs(tmp_path):
    """2 CPUs, 4 objects a slab: 4 slabs, 16 "objects", ``cpu_slabs`` 4, nothing on the node
    list, and the first round's ``slabs_cpu_partial`` puts 3 slabs on CPU 1's partial list
    and none on CPU 0's (``cpu_partial_start`` [0, 3]). On paper: 4 - 3 = 1 active slab,
    on CPU 1 (the CPU with a partial list first), CPU 1's list 3 slabs long, CPU 0 holding
    nothing. Without the split (an older trace) the 4 go round robin: an active slab on
    each CPU, one CPU partial slab on each."""
    rows = [_held_sample(4, 16, 4, 0, 0), _held_sample(4, 16, 4, 0, 0)]
    for split, want in (([0, 3], ([1], [0, 3])), (None, ([0, 1], [1, 1]))):
        extra = {"cpu_partial_start": split} if split is not None else {}
        trace = _trace(tmp_path / f"t{split}", rows, ncpus=2, step=1_000_000_000,
                       cpu_partial=8, min_partial=5, **extra)
        run = replay(trace, select("objcg", {}), era="6.8", samples=2,
                     from_kernel_state=True).runs[0]
        m, inst = run.model, run.model.inst_of[0, 0]
        assert [c for c in (0, 1) if m.pcpu[P_ACTIVE, inst, c] >= 0] == want[0], split
        assert [m.pcpu[P_PSLABS, inst, c] for c in (0, 1)] == want[1], split
        assert list(slab_samples(run)["model_slabs"]) == [4, 4]
