"""What the recording did not hold, supplied on request: a bigger host, the kernel's start.

Two optional inputs of :func:`kmemtrace.replay.engine.replay`, both documented in
docs/replay.md:

* ``--cpus N`` (:func:`map_cpus`): the recording host had few CPUs, and per-CPU parking
  (cpu slab, cpu partial lists, objcg stocks) grows with CPUs. Each recorded CPU ``c`` is
  split into ``N // recorded`` CPUs and every task's events go to one of them by a hash of
  its pid: ``c + recorded * (hash(pid) % (N // recorded))``. Events that shared a CPU in
  the recording still share one when they came from the same task, and tasks are spread
  as a scheduler with more CPUs would spread them. With ``N`` equal to the recorded count
  the mapping is the identity; with fewer, ``c % N``.
* the kernel's state at the start (:func:`kernel_start`): the first ``/sys/kernel/slab``
  sample of each cache (taken right after attach) says how many slabs and objects it
  held. Without them the model starts empty, so its raw error against later samples is
  the whole pre-existing population. The prelude allocates, at the start time, slabs and
  objects of unknown owner (the root) to those counts, and gives the pointers that the
  trace frees without having allocated them to such objects of the same cache, on the
  slab they really sit on: SLUB's slabs are buddy blocks of ``PAGE_SIZE << order`` bytes
  (``allocate_slab()``/``alloc_slab_page()`` in mm/slub.c), which the buddy allocator
  aligns naturally, and the direct map keeps that alignment, so a pointer's slab is
  ``ptr & ~((PAGE_SIZE << order) - 1)``. Their frees then empty the slabs they emptied
  in the kernel. A free that names no cache (``kfree``) is given the cache of the last
  allocation on the same slab page before it (:func:`_cache_from_page`). The model has
  no addresses after the prelude: an object the trace allocates on a pre-recording slab
  page goes where the model's SLUB puts it (CPU slab, CPU partial, node partial, new
  slab), as any other.
"""

from typing import NamedTuple

import numpy as np

from kmemtrace.model.eras import cpu_partial_slabs
from kmemtrace.model.start import (
    ROLE_ACTIVE,
    ROLE_CPU_PARTIAL,
    ROLE_FULL,
    ROLE_NODE,
    ROLE_NONE,
    SLAB_CPU,
    SLAB_ROLE,
)
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import ROOT_MEMCG_ID, SAMPLE_HAS_CPU_FIELDS, EventKind

PAGE = 4096
FAKE_BASE = 1 << 40  # user-space addresses: no kernel slab object has one
SAMPLE_SPAN_S = 0.25  # a round of /sys/kernel/slab samples is read within this of its stamp
# a cache's own reads (recorders from 2026-11-27 stamp each row at them) take ~0.1 ms
OWN_SPAN_S = 0.002
SAMPLE_COLS = ["kind", "cache_id", "aux", "aux2", "gfp", "bytes", "pid", "ptr"]
Held = tuple[int, int, int] | None  # a sample's (cpu_slabs, partial, objects_partial)


class Bounds(NamedTuple):
    """What a cache's samples say of its start (:func:`_net_at_samples`)."""

    room: int  # the most objects they leave room for
    least_slabs: int  # the fewest slabs they report
    proven: int  # the fewest live that they prove
    strict: int  # the most they leave room for by bounds alone
    freed_first: int  # what the trace freed, net, before the first sample was read


def _held(cols: dict[str, np.ndarray], i: int) -> Held:
    """What the CPUs held at sample row ``i``, or None when the row does not say (older
    traces, or a round the recorder read without them: docs/trace-format.md)."""
    if cols["gfp"][i] != SAMPLE_HAS_CPU_FIELDS:
        return None
    return int(cols["bytes"][i]), int(cols["pid"][i]), int(cols["ptr"][i])


def map_cpus(cpu: np.ndarray, pid: np.ndarray, recorded: int, n: int) -> np.ndarray:
    """Recorded CPUs onto ``n`` CPUs (see the module docstring)."""
    cpu = cpu.astype(np.int64) % max(recorded, 1)
    if n <= recorded:
        return cpu % n
    fan = n // recorded
    # Knuth's multiplicative hash: consecutive pids (a fork burst) land far apart
    h = (pid.astype(np.uint64) * np.uint64(2654435761)) >> np.uint64(16)
    return cpu + recorded * (h % np.uint64(fan)).astype(np.int64)


def _first_samples(trace: TraceReader) -> dict[int, tuple[int, int, Held]]:
    """cache id -> (slabs, objects, what the CPUs held) of its first SLAB_SAMPLE."""
    out: dict[int, tuple[int, int, Held]] = {}
    for cols in trace.iter_parts(SAMPLE_COLS):
        sel = np.flatnonzero(cols["kind"] == EventKind.SLAB_SAMPLE)
        for i in sel:
            out.setdefault(int(cols["cache_id"][i]),
                           (int(cols["aux"][i]), int(cols["aux2"][i]), _held(cols, i)))
        if sel.size:
            break  # the first round is in the first part that has samples
    return out


def shrunk_starts(trace: TraceReader) -> np.ndarray | None:
    """The time each cache's model starts at, indexed by cache id: its first sample's stamp
    for a cache the recorder shrank right before it (``record --shrink-at-start``), else
    the int64 minimum (no cut: from the trace's start); None when no cache was shrunk.

    A shrunk cache's first sample is its whole start (no CPU holds an empty slab then), but
    it is read 20-250 ms after the trace starts, and the events between already shaped it.
    Replayed on a start laid out from that sample, they counted twice and landed where they
    liked: ``seq_file``, 21 objects on one node-partial slab at 0.2 s in churn run 0, got
    a second, partly used slab from the 0.2 s of opens before it, and the model stayed one
    slab (+100 %) above the kernel to the end, in five traces. So such a cache's allocations
    and frees before that stamp are taken as before the recording (:func:`pre_start`): the
    objects they left live are in the sample, and the frees after it of those objects
    free pointers of the start, on the slabs the trace shows them on (:func:`kernel_start`).
    """
    cut: dict[int, int] = {}
    for cols in trace.iter_parts(["ts_ns", "kind", "cache_id"]):
        sel = np.flatnonzero(cols["kind"] == EventKind.SLAB_SAMPLE)
        for i in sel:
            cut.setdefault(int(cols["cache_id"][i]), int(cols["ts_ns"][i]))
        if sel.size:
            break  # the first round is in the first part that has samples
    shrunk = [c["id"] for c in trace.caches if c.get("shrunk_at_start") and c["id"] in cut]
    if not shrunk:
        return None
    starts = np.full(max(shrunk) + 1, np.iinfo(np.int64).min, np.int64)
    starts[shrunk] = [cut[c] for c in shrunk]
    return starts


def pre_start(cols: dict[str, np.ndarray], starts: np.ndarray | None) -> np.ndarray:
    """Rows that are allocations or frees of a cache before its model's start
    (:func:`shrunk_starts`). A ``kfree`` names no cache and stays: the allocation it would
    match is gone, so it frees nothing, and an older object it frees is not in the sample."""
    cache = cols["cache_id"].astype(np.int64)
    if starts is None:
        return np.zeros(len(cache), dtype=bool)
    known = (cache >= 0) & (cache < len(starts))
    at = np.where(known, starts[np.where(known, cache, 0)], np.iinfo(np.int64).min)
    return (known & (cols["ts_ns"] < at)
            & ((cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.FREE)))


def _parked_free(cache: dict, slabs: int, objects: int, ncpus: int,
                 cpu_slabs: int | None = None, bounded: bool = False) -> int:
    """Free slots a sample's ``objects`` counts in use: those of the slabs the CPUs hold.

    ``objects`` in /sys/kernel/slab is the capacity of every slab not on the node partial
    list plus the objects on those that are (``show_slab_objects``, SO_OBJECTS), so a slab
    a CPU holds counts full: its active slab and every slab of its CPU partial list. Their
    live objects are not known, only bounded; the active slabs are taken as half free (as
    at the start, :func:`kernel_start`).

    A sample that read ``cpu_slabs`` (SO_CPU: per CPU, 1 + its CPU partial list's slabs)
    gives their number, and a CPU partial slab is then taken as free by one slot only, the
    least it can be (a slab parks there at a free, and no allocation takes from it until
    it is made active): the bound the kernel proves, so that a static cache keeps its
    CPU partial slabs (``tracefs_inode_cache``: 7 of its 31 slabs; taken as empty, the
    model discarded them) and a churning one is held down by its later samples alone.

    Otherwise their number is estimated: up to ``cpu_partial_slabs`` =
    ``DIV_ROUND_UP(2 * cpu_partial, objs_per_slab)`` partial slabs a CPU
    (``slub_set_cpu_partial``), no more than ``slabs``, no more than ``objects`` counts
    whole. With ``bounded`` (a sample without the fields in a trace whose other samples
    of the cache have them) those are taken as free by one slot too, as the sampled ones
    around it; mixed, the estimate's empty slabs made the unsampled rounds the tightest
    bound (``tracefs_inode_cache``: room for 84 survivors of 293). Without, they are
    taken as empty: emptied meanwhile in a churning cache
    (``dnotify_struct`` emptied from one CPU on the recording kernel reported 256
    "objects" with none live: its active slab and one CPU partial slab,
    analyses/which_way/parking.py)."""
    per = max(int(cache.get("objs_per_slab") or 1), 1)
    if cpu_slabs is None:
        per_cpu = 1 + cpu_partial_slabs(int(cache.get("cpu_partial") or 0), per)
        held = min(slabs, ncpus * per_cpu, objects // per)
    else:  # the files are read one after another: churn may move a slab between them
        held = max(min(cpu_slabs, slabs, objects // per), 0)
    parked_free = min(1, per - 1) if cpu_slabs is not None or bounded else per
    active = min(held, ncpus)
    return (held - active) * parked_free + active * per // 2


def _cpu_order(cpu_held: int, split: list[int] | None, ncpus: int
               ) -> tuple[int, np.ndarray, np.ndarray] | None:
    """How many of ``cpu_held`` CPU-held slabs are active, and the CPU of each active and
    each CPU partial slab, from the first round's slabs per CPU partial list (the cache
    table's ``cpu_partial_start``, docs/trace-format.md), or None where that does not
    say (older traces, or counts that do not add up: the files are read one after
    another). The active slabs go to the CPUs with a partial list first."""
    if split is None:
        return None
    split = np.asarray(split[:ncpus], np.int64)
    active = cpu_held - int(split.sum())
    if active < 0 or active > ncpus:
        return None
    by_list = np.r_[np.flatnonzero(split > 0), np.flatnonzero(split == 0),
                    np.arange(len(split), ncpus)]
    return active, by_list[:active], np.repeat(np.arange(len(split)), split)


def _start_profile(slabs: int, held: tuple[int, int, int], per: int, ncpus: int,
                   on_cpus: tuple[int, np.ndarray, np.ndarray] | None = None,
                   shrunk: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Live objects per starting slab from a first sample that says what the CPUs hold, and
    each slab's role (``ROLE_*``, where :func:`kmemtrace.model.start.lay_out` puts it):
    ``slabs - partial - cpu_slabs`` full slabs exactly, ``partial`` node-partial slabs
    sharing ``objects_partial`` exactly (as evenly as they can), then the ``cpu_slabs``
    CPU-held ones, the active slabs first (one a CPU, at most ``ncpus``, or as many as
    ``on_cpus``, :func:`_cpu_order`, says). Those hold no
    survivor of unknown address here: their live objects are only bounded (``objects``
    counts them full), and the later samples' lower bound (:func:`_net_at_samples`) says
    whether they held any (:func:`_profile_fill` gives them the excess first). Placed on
    the CPUs' lists, an empty CPU-held slab stays parked as long as the kernel keeps it
    (a static cache's, ``tracefs_inode_cache``) and is drained when traffic drains it (a
    churning cache's, ``bio-184``). The roles also order what gives way where the
    survivors are fewer: CPU partial (0), active (1), node-partial (2), full (3).
    ``shrunk`` (``record --shrink-at-start``): the CPU-held slabs were taken in the µs
    since the shrink, and hold what :func:`_retaken_free` says, an active one one object, a
    CPU partial one all but one: so placed, not as the excess. As the excess, the 8
    survivors of ``names_cache`` (2 CPU-held slabs of 8 in churn run 1 of the 22:06 study)
    all went on the active slab, and the replay's shrink at the sample discarded the empty
    CPU partial one (-50 %)."""
    cpu_slabs, partial, objects_partial = held
    cpu_held = max(min(cpu_slabs, slabs), 0)
    node = max(min(partial, slabs - cpu_held), 0)
    full = slabs - cpu_held - node
    active = min(cpu_held, ncpus) if on_cpus is None else on_cpus[0]
    profile = np.zeros(slabs, np.int64)
    rank = np.zeros(slabs, np.int64)
    profile[:full], rank[:full] = per, ROLE_FULL
    if node:
        q, r = divmod(max(min(objects_partial, node * per), 0), node)
        profile[full:full + node] = q + (np.arange(node) < r)
        rank[full:full + node] = ROLE_NODE
    rank[full + node:full + node + active] = ROLE_ACTIVE
    rank[full + node + active:] = ROLE_CPU_PARTIAL
    if shrunk:
        profile[full + node:full + node + active] = min(1, per)
        profile[full + node + active:] = max(per - 1, 0)
    return profile, rank


def own_stamps(sample_ts: np.ndarray) -> bool:
    """Whether a trace's SLAB_SAMPLE rows carry their own cache's stamp (most stamps
    distinct) rather than their round's one (docs/trace-format.md, "SLAB_SAMPLE")."""
    return len(np.unique(sample_ts)) > len(sample_ts) // 2


def _net_at_samples(trace: TraceReader, ncpus: int, starts: np.ndarray | None
                    ) -> dict[int, Bounds]:
    """cache id -> (the most objects the kernel's samples leave room for at the start, the
    fewest slabs they report, the fewest live at the start that they prove, the most they
    leave room for by bounds alone, the objects the trace freed, net, before the first
    sample was read: at least, its highest ``net`` around it). The first is the least, over
    its samples, of ``objects(t) - parked(t) - net(t)``, ``net(t)`` the cache's traced
    allocations minus frees since the start (a ``kfree`` counted on the cache of the
    allocation before it at that address), ``parked(t)`` the free slots of the slabs the
    CPUs hold (:func:`_parked_free`), which ``objects`` counts in use. The third is the
    most, over the samples that read what the CPUs hold, of ``proven(t) - own(t)``:
    ``proven(t)`` = the full slabs' capacity plus ``objects_partial``, live objects off the
    CPUs' slabs, of which the trace's own allocations not yet freed account for at most
    ``own(t)`` (taken at its most around the sample); the rest were live at the start. The
    fourth is the first over those samples with no CPU-held slot taken as free but the one a
    CPU partial slab must have: where the third exceeds it (with the old objects' frees that
    only their slab page names counted back, :func:`_start_inputs`), the trace missed frees
    (:func:`unseen_frees`). The kernel's live objects at ``t`` are the start's survivors,
    less those the trace freed, plus ``net``-worth of the trace's own. Without ``parked(t)``
    this was a bound (``objects`` is never below the live count), but a loose one where CPUs
    park empty slabs: ``bio-184`` in churn run 1 kept 84 survivors on 9 slabs that no free
    reached, where the kernel's 9 slabs at 58.5 s were 5 empty ones on the node list (84
    "objects" = the capacity of the other 4), and the model sat up to 13 slabs above the
    kernel. ``net`` is taken at its lowest within :data:`SAMPLE_SPAN_S` of the sample: a
    round of samples is stamped once and read cache by cache after it, and a burst that came
    and went while it was read (``bio-184``: 480 objects in flight within ms) must not
    count. Where each row has its own cache's stamp (:func:`own_stamps`) the window is
    :data:`OWN_SPAN_S`, the reads' own span with room to spare: the lowest ``net`` over a
    quarter second let through survivors the kernel did not have. A shrunk cache's
    allocations and frees before its start (``starts``, :func:`shrunk_starts`) are not
    counted: their result is in its first sample."""
    ts, kind, ptr, cache, objs, slabs, held, node = [], [], [], [], [], [], [], []
    for cols in trace.iter_parts(["ts_ns", *SAMPLE_COLS]):
        sel = np.isin(cols["kind"], (EventKind.ALLOC, EventKind.FREE, EventKind.SLAB_SAMPLE))
        sel &= ~pre_start(cols, starts)
        # cpu_slabs where the sample read it, else -1 (for samples, and for events that
        # use those columns for something else)
        has = (cols["kind"] == EventKind.SLAB_SAMPLE) & (cols["gfp"] == SAMPLE_HAS_CPU_FIELDS)
        held.append(np.where(has, cols["bytes"], -1)[sel].astype(np.int64))
        node.append(np.where(has, cols["pid"], 0)[sel].astype(np.int64))
        ts.append(cols["ts_ns"][sel])
        kind.append(cols["kind"][sel])
        ptr.append(cols["ptr"][sel].astype(np.uint64))
        cache.append(cols["cache_id"][sel].astype(np.int64))
        objs.append(cols["aux2"][sel].astype(np.int64))
        slabs.append(cols["aux"][sel].astype(np.int64))
    if not ts:
        return {}
    ts, kind, ptr = np.concatenate(ts), np.concatenate(kind), np.concatenate(ptr)
    cache, objs, slabs = np.concatenate(cache), np.concatenate(objs), np.concatenate(slabs)
    held, node = np.concatenate(held), np.concatenate(node)
    sample = kind == EventKind.SLAB_SAMPLE
    ev = np.flatnonzero(~sample)
    by_ptr = ev[np.argsort(ptr[ev], kind="stable")]
    prev_alloc = np.r_[False, (ptr[by_ptr][1:] == ptr[by_ptr][:-1])
                       & (kind[by_ptr][:-1] == EventKind.ALLOC)]
    unnamed = prev_alloc & (cache[by_ptr] < 0) & (kind[by_ptr] == EventKind.FREE)
    cache[by_ptr[unnamed]] = cache[by_ptr[np.flatnonzero(unnamed) - 1]]
    step = np.where(kind == EventKind.ALLOC, 1, np.where(kind == EventKind.FREE, -1, 0))
    # an address allocated again while live: its free reached no program (``maple_node``,
    # bulk and RCU frees on 6.18); counted where it shows, or such a cache's ``net`` only
    # grows and leaves no room at all. Only within one cache: after another cache's
    # allocation of the address (its slab page changed hands, that cache's free unseen)
    # it is an allocation like any other; counted as the implied free, it left
    # ``bio-184`` 122 objects short a churn run.
    same_cache = np.r_[False, cache[by_ptr][1:] == cache[by_ptr][:-1]]
    paired = prev_alloc & same_cache
    step[by_ptr[paired & (kind[by_ptr] == EventKind.ALLOC)]] = 0
    # the trace's own objects alone: a FREE that no traced ALLOC of the cache precedes at
    # its address is of an object from before the recording (or one handed out by a path
    # no program sees)
    own_step = step.copy()
    own_step[by_ptr[~paired & (kind[by_ptr] == EventKind.FREE)]] = 0
    span = int((OWN_SPAN_S if own_stamps(ts[sample]) else SAMPLE_SPAN_S) * 1e9)
    geom = {c["id"]: c for c in trace.caches}
    out: dict[int, tuple[int, int, int, int]] = {}
    for c in np.unique(cache[sample]):
        mine = np.flatnonzero(cache == c)
        bounded = bool((held[mine] >= 0).any())
        per = max(int(geom.get(int(c), {}).get("objs_per_slab") or 1), 1)
        net = np.cumsum(step[mine])  # after each of the cache's rows; samples add 0
        own = np.cumsum(own_step[mine])
        t = ts[mine]
        for i in np.flatnonzero(sample[mine]):
            lo, hi = np.searchsorted(t, t[i] - span), np.searchsorted(t, t[i] + span, "right")
            before = int(net[lo - 1]) if lo else 0
            low = min(int(net[lo:hi].min()), before)
            high = max(int(own[lo:hi].max()), int(own[lo - 1]) if lo else 0)
            if int(c) not in out:  # its first sample: what the trace freed (net) before
                out[int(c)] = Bounds(1 << 62, 1 << 62, 0, 1 << 62,
                                     max(-max(int(net[lo:hi].max()), before), 0))
            had = out[int(c)]
            j = mine[i]
            cpu_slabs = int(held[j])
            parked = _parked_free(geom.get(int(c), {}), int(slabs[j]), int(objs[j]), ncpus,
                                  cpu_slabs if cpu_slabs >= 0 else None, bounded)
            # live objects the sample proves: those of the full and node-partial slabs, where
            # its reads agree (``objects`` = the capacity of every slab off the node list
            # plus ``objects_partial``); under churn a count read a moment later than
            # ``slabs`` may not (``bio-184``: 231 "proven" of 170 objects)
            off_node = int(slabs[j]) - int(node[j])
            agree = cpu_slabs >= 0 and int(objs[j]) == off_node * per + int(ptr[j])
            proven = max(off_node - cpu_slabs, 0) * per + int(ptr[j]) if agree else 0
            # the least the CPU-held slabs can have free: none on an active slab, one on
            # a CPU partial slab (a bound, where ``parked`` is an estimate)
            least_free = (max(min(cpu_slabs, int(slabs[j])) - ncpus, 0) * min(1, per - 1)
                          if agree else 0)
            strict = int(objs[j]) - least_free - low if agree else 1 << 62
            out[int(c)] = had._replace(room=min(had.room, int(objs[j]) - parked - low),
                                       least_slabs=min(had.least_slabs, int(slabs[j])),
                                       proven=max(had.proven, proven - high),
                                       strict=min(had.strict, strict))
    return out


def _preexisting_frees(trace: TraceReader, order: dict[int, int], starts: np.ndarray | None
                       ) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """(cache id -> pointers whose first event in the trace is a FREE, first freed first;
    cache id -> how many of those a ``kfree`` freed, their cache named by their slab page
    alone, which :func:`_net_at_samples` cannot count). A shrunk cache's events before its
    start (``starts``) are not seen, so an object allocated before it and freed after is
    an old pointer of the start."""
    ptrs, kinds, caches = [], [], []
    for cols in trace.iter_parts(["ts_ns", "kind", "ptr", "cache_id"]):
        sel = (cols["kind"] == EventKind.ALLOC) | (cols["kind"] == EventKind.FREE)
        sel &= ~pre_start(cols, starts)
        ptrs.append(cols["ptr"][sel].astype(np.uint64))
        kinds.append(cols["kind"][sel])
        caches.append(cols["cache_id"][sel].astype(np.int64))
    if not ptrs:
        return {}, {}
    ptr, kind, cache = np.concatenate(ptrs), np.concatenate(kinds), np.concatenate(caches)
    by_ptr = np.argsort(ptr, kind="stable")
    first = np.ones(len(ptr), dtype=bool)
    first[1:] = ptr[by_ptr][1:] != ptr[by_ptr][:-1]
    idx = np.sort(by_ptr[first])  # in the order of their first event
    idx = idx[kind[idx] == EventKind.FREE]
    fcache = cache[idx].copy()
    unnamed = fcache < 0
    alloc = np.flatnonzero(kind == EventKind.ALLOC)
    _cache_from_page(ptr[idx], idx, fcache, ptr[alloc], alloc, cache[alloc], order)
    fptr = ptr[idx]
    caches = [int(c) for c in np.unique(fcache) if c >= 0]
    return ({c: fptr[fcache == c] for c in caches},
            {c: int((unnamed & (fcache == c)).sum()) for c in caches})


def _cache_from_page(fptr, fpos, fcache, aptr, apos, acache, order: dict[int, int]) -> None:
    """Fill unknown caches of ``fptr`` (freed at event ``fpos``) from the last allocation
    on the same slab page before the free (in place). Only one before it: a page changes
    cache only after its slab was emptied and discarded (``discard_slab()`` ->
    ``free_slab()`` in mm/slub.c, then ``allocate_slab()`` of another cache), so an
    allocation after the free may be on a page reused since. In classic run 1, 581
    ``kfree``s of ``kmalloc-rcl-96`` objects at 1.8-2 s (the kernel's ``kmalloc-rcl-96``
    went from 3 990 objects to 446) hit 17 pages that ``kmalloc-cg-96`` took over from
    2 s to 56 s; named after that later owner, they made 13 starting slabs where the
    kernel had 5 (+160 % from the first sample)."""
    for o in sorted(set(order.values())):
        unknown = np.flatnonzero(fcache < 0)
        if not unknown.size:
            return
        mask = np.uint64(~((PAGE << o) - 1) & 0xFFFFFFFFFFFFFFFF)
        of_order = np.flatnonzero(np.isin(acache, [c for c, co in order.items() if co == o]))
        if not of_order.size:
            continue
        base, pos, owner = aptr[of_order] & mask, apos[of_order], acache[of_order]
        keys, group = np.unique(base, return_inverse=True)
        # one sortable key per allocation: its page's rank, then its place in the trace
        span = np.int64(max(int(pos.max()), int(fpos.max())) + 1)
        akey = group.astype(np.int64) * span + pos
        sort = np.argsort(akey)
        akey, owner = akey[sort], owner[sort]
        want = fptr[unknown] & mask
        g = np.searchsorted(keys, want).clip(max=len(keys) - 1)
        on_page = keys[g] == want
        j = np.searchsorted(akey, g.astype(np.int64) * span + fpos[unknown]) - 1
        hit = on_page & (j >= 0) & (akey[j.clip(min=0)] // span == g)
        fcache[unknown[hit]] = owner[j[hit]]


def _slab_groups(real: np.ndarray, order: int, per_slab: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots of the pre-recording pointers ``real`` (sorted by address) on the slabs they
    really sit on: (pointers, slot index among ``n_slabs * per_slab`` slots), and
    ``n_slabs``. A slab is a naturally aligned buddy block of ``PAGE << order`` bytes (see
    the module docstring), so ``ptr & ~(block - 1)`` names it; pointers sharing it share a
    model slab. A block holding more than ``per_slab`` of them (a trace whose ``order`` is
    not the slabs' real one) spreads over as many model slabs as it needs."""
    ptr = np.sort(real)
    base = ptr & np.uint64(~((PAGE << order) - 1) & 0xFFFFFFFFFFFFFFFF)
    start = np.flatnonzero(np.r_[True, base[1:] != base[:-1]])
    size = np.diff(np.r_[start, len(ptr)])
    rank = np.arange(len(ptr)) - np.repeat(start, size)
    slabs_per_group = -(-size // per_slab)
    first_slab = np.r_[0, np.cumsum(slabs_per_group)[:-1]]
    slot = np.repeat(first_slab, size) * per_slab + rank
    return ptr, slot, int(slabs_per_group.sum())


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` of ``n`` positions, evenly spaced (a mask)."""
    mask = np.zeros(n, dtype=bool)
    if k:
        mask[np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))] = True
    return mask


def _level_fill(counts: np.ndarray, n_other: int, per_slab: int, unknown: int
                ) -> tuple[np.ndarray, int]:
    """Share ``unknown`` objects among slabs already holding ``counts`` (the known slabs)
    and ``n_other`` empty ones so that every slab ends as near one level as capacity
    allows (the old even spread, with the known objects counted in): per known slab how
    many it gets, and how many go to the others. Assumes they fit."""
    level = 0
    while level < per_slab and (np.clip(level + 1 - counts, 0, None).sum()
                                + (level + 1) * n_other) <= unknown:
        level += 1
    share = np.clip(level - counts, 0, per_slab - counts)
    to_other = level * n_other
    rest = unknown - int(share.sum()) - to_other
    extra = min(rest, n_other * (per_slab > level))
    to_other += extra
    rest -= extra
    room = np.flatnonzero(counts + share < per_slab)[:rest]
    share[room] += 1
    return share, to_other


def _profile_fill(counts: np.ndarray, n_other: int, per_slab: int, unknown: int,
                  profile: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Share ``unknown`` objects among the known slabs (holding ``counts``) and ``n_other``
    empty ones so that their occupancies follow ``profile`` (:func:`_start_profile`): the
    fullest known slabs take the fullest places, the others the next in order. What the
    profile asks beyond ``unknown`` is given up by rank (the least known places first),
    down to one object a slab before any slab empties: the kernel had those slabs, and a
    cache whose frees partly reach no probe leaves little room (``kmalloc-96``, 45 782
    unseen frees in a churn run: emptied, its slabs started at 66 pages of 162);
    what ``unknown`` holds beyond it goes to the places whose live objects the first sample
    does not say, the CPU-held slabs (the active ones filled first, the CPU partial ones
    evenly: :func:`_even_share`), then to the others with room. Returns
    per known slab how many it gets, per other slab how many it holds, and every slab's
    role (known slabs first)."""
    n_real = len(counts)
    target = np.zeros(n_real + n_other, np.int64)
    rank = np.full(n_real + n_other, ROLE_NODE, np.int64)
    k = min(len(profile[0]), len(target))
    target[:k], rank[:k] = profile[0][:k], profile[1][:k]
    by_size = np.argsort(-target[:n_real], kind="stable")
    want = np.zeros(n_real, np.int64)
    want[np.argsort(-counts, kind="stable")] = target[:n_real][by_size]
    want_rank = np.zeros(n_real, np.int64)
    want_rank[np.argsort(-counts, kind="stable")] = rank[:n_real][by_size]
    give = np.r_[np.clip(want - counts, 0, per_slab - counts), target[n_real:]]
    cap = np.r_[per_slab - counts, np.full(n_other, per_slab, np.int64)]
    place = np.r_[want_rank, rank[n_real:]]
    gap = unknown - int(give.sum())
    if gap < 0:  # given up by the least known places first, leaving each slab one first
        order = np.argsort(place, kind="stable")
        floor = ((np.r_[counts, np.zeros(n_other, np.int64)] == 0) & (give > 0))[order]
        for keep in (floor.astype(np.int64), 0):
            g = give[order]
            take = _in_turn(np.clip(g - keep, 0, None), -gap)
            give[order] = g - take
            gap += int(take.sum())
    elif gap > 0:  # where the first sample leaves room: the CPU-held slabs
        gap = _fill(give, cap, np.flatnonzero(place == ROLE_ACTIVE), gap)
        partial = np.flatnonzero(place == ROLE_CPU_PARTIAL)
        # evenly, and one slot of each left free: a slab goes there at a free
        share = _even_share(np.clip(cap[partial] - give[partial] - 1, 0, None), gap)
        give[partial] += share
        _fill(give, cap, np.argsort(-place, kind="stable"), gap - int(share.sum()))
    return give[:n_real], give[n_real:], place


def _in_turn(room: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` shared over slots with ``room``, each slot taking all it can before
    the next."""
    return np.clip(n - (np.cumsum(room) - room), 0, room)


def _fill(give: np.ndarray, cap: np.ndarray, order: np.ndarray, n: int) -> int:
    """Give up to ``n`` more to the slabs ``order`` names, each filled to ``cap`` before
    the next (in place); returns what is left of ``n``."""
    take = _in_turn((cap - give)[order], n)
    give[order] += take
    return n - int(take.sum())


def _even_share(room: np.ndarray, n: int) -> np.ndarray:
    """``n`` objects shared over slots with ``room`` as evenly as room allows (water
    filling: each slot takes up to one level, the level as low as holds them all, the
    last slots at that level one less where it overshoots). The CPU partial slabs get
    the survivors the later samples prove beyond the first sample's node and full slabs
    and the active slabs' room this way, not each filled before the next: ``pid`` in
    classic run 2 had 16 CPU slabs at the start and 113 survivors proven; filled one by
    one, 3 slabs took them and 11 CPU partial slabs started empty, and when the kernel
    drained its CPU partial lists at 50 s (8 slabs to the node list, all kept: 139
    objects) the model discarded 7 (-35 %)."""
    if n <= 0 or not len(room):
        return np.zeros(len(room), np.int64)
    lo, hi = 0, int(room.max())
    while lo < hi:  # the least level that holds n (or every slot full)
        mid = (lo + hi) // 2
        if int(np.minimum(room, mid).sum()) >= n:
            hi = mid
        else:
            lo = mid + 1
    share = np.minimum(room, lo)
    over = int(share.sum()) - n
    if over > 0:
        at_level = np.flatnonzero(share == lo)[::-1][:over]
        share[at_level] -= 1
    return share


def _missed(proven: int, strict: int, per_slab: int) -> int:
    """Objects live at the start that the samples prove (``proven``) beyond what later
    samples leave room for by bounds alone (``strict``, the old objects the trace frees
    counted in): frees no program saw. Counted past a slab's worth. Both bounds come only
    from samples whose reads agree (``objects`` = the capacity off the node list plus
    ``objects_partial``), so reads that are not atomic are already kept out; a cushion of
    5 % of ``proven`` on top hid the 454 frees of ``tw_sock_TCP`` (2.0 % of 23 073
    TIME_WAIT sockets) that classic run 2 of the 00:58 study missed, and the model ended
    34 slabs over the kernel's 11 with the cache in the traced worst (+309 %). Without it
    the nine traces' 986 fits on both targets stayed 986."""
    excess = proven - strict
    return excess if excess > per_slab else 0


def _start_inputs(trace: TraceReader):
    """What the start is made from: the first samples, the cache table by id, slab
    orders, the old pointers the trace frees, CPUs, and the later samples' bounds."""
    first = _first_samples(trace)
    geom = {c["id"]: c for c in trace.caches}
    order = {cid: int(c.get("order", 0)) for cid, c in geom.items()}
    if not first:
        return first, geom, order, {}, 1, {}
    ncpus = max(int(trace.meta.get("ncpus") or 1), 1)
    starts = shrunk_starts(trace)  # a shrunk cache's events before its start are not seen
    pre, paged = _preexisting_frees(trace, order, starts)
    # the strict bound's ``net`` counts the frees that name the cache (or follow its
    # allocation), not the old objects' ``kfree``s that only their slab page names: those
    # give it room back. Counting every old pointer back instead counted the named ones
    # twice and hid 1 500 frees of ``inode_cache`` in classic run 1 (3 326 live at the
    # start proven, room for 1 826, and the 1 708 old objects freed all by name).
    bounds = {c: b._replace(strict=b.strict + paged.get(c, 0))
              for c, b in _net_at_samples(trace, ncpus, starts).items()}
    return first, geom, order, pre, ncpus, bounds


def unseen_frees(trace: TraceReader) -> dict[int, int]:
    """cache id -> objects whose frees the trace missed, as the kernel's own samples prove
    (:func:`_missed`), for the caches where it did: ``kmalloc-192`` in a ``drop_caches``
    run, 5 810 objects proven live at the start on full and node-partial slabs, 4 705
    more than the samples after the drop leave room for with the 187 old objects the
    trace frees. The prelude keeps such a
    cache's start whole (the kernel had those slabs) and the calibration lists it with its
    evidence."""
    first, geom, _, _, _, bounds = _start_inputs(trace)
    out = {}
    for cid, (_, _, held) in first.items():
        if held is None or cid not in bounds or cid not in geom:
            continue
        missed = _missed(bounds[cid].proven, bounds[cid].strict,
                         max(int(geom[cid]["objs_per_slab"]), 1))
        if missed:
            out[cid] = missed
    return out


def _slab_cpus(roles: np.ndarray, order: tuple[int, np.ndarray, np.ndarray] | None
               ) -> np.ndarray:
    """The CPU of each CPU-held slab by its role, in order (:func:`_cpu_order`); -1 where
    not known (the layout then shares them round robin)."""
    cpus = np.full(len(roles), -1, np.int64)
    if order is None:
        return cpus
    for role, seq in ((ROLE_ACTIVE, order[1]), (ROLE_CPU_PARTIAL, order[2])):
        at = np.flatnonzero(roles == role)[:len(seq)]
        cpus[at] = seq[:len(at)]
    return cpus


def _retaken_free(cpu_slabs: int, split: list[int] | None, per_slab: int, ncpus: int) -> int:
    """Free slots of the slabs the CPUs took in the µs between a shrink and the sample
    (``record --shrink-at-start``), which ``objects`` counts full. The shrink freed every
    empty slab and left none on a CPU, so each slab a CPU holds at the sample came since:
    a CPU partial one by a free from a full slab, one slot free; an active one for an
    allocation, from the node list or the page allocator, holding at least that object:
    taken as holding just it, so that the replay's own shrink at the sample keeps it, as
    the kernel still had it. (Half full, it pinned a slab the kernel did not have for a
    whole churn run when the sampler's own opens still took it: ``seq_file``.)"""
    partial = min(sum(split) if split else max(cpu_slabs - ncpus, 0), cpu_slabs)
    return partial + (cpu_slabs - partial) * (per_slab - 1)


def _cache_prelude(cid: int, slabs: int, objects: int, bound: Bounds,
                   real: np.ndarray, order: int, per_slab: int, ncpus: int,
                   held: Held = None, split: list[int] | None = None, shrunk: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                              np.ndarray | None]:
    """One cache's prelude: (pointers, CPU, kept) in allocation order, and each slab's
    role and CPU where the first sample says what the CPUs hold (see kernel_start)."""
    room, least_slabs, proven, strict, freed_first = bound
    # the first sample is read a moment after the start: what the trace freed before it
    # was live at the start (``tw_sock_TCP`` in classic run 1 of the 15:58 study: 1 090
    # TIME_WAIT sockets freed in the 0.24 s before a first sample of 29 421; capped at
    # that, the prelude left 61 slabs out, and the model sat under the kernel by them to
    # the end, -63 % when the kernel was down to 13 slabs)
    objects += freed_first
    real = real[:max(objects, 0)]
    on_cpus = None if held is None else _cpu_order(max(min(held[0], slabs), 0), split, ncpus)
    # frees the trace missed, proven by the samples: the start they prove is kept whole
    unseen = held is not None and _missed(proven, strict, per_slab) > 0
    if held is None:
        hidden = min(slabs, ncpus) * per_slab // 2
        keep = max(min(objects - hidden, room), len(real), 0)
    else:  # the fewest the samples prove, within what they leave room for
        hidden = _parked_free({"objs_per_slab": per_slab}, slabs, objects, ncpus, held[0])
        fewest = (objects - _retaken_free(held[0], split, per_slab, ncpus) if shrunk
                  else min(proven, objects - hidden))
        # a shrunk cache starts at its first sample: never with fewer than the samples
        # prove live. Less room than that (the trace's net allocations outran the
        # kernel's count later) is frees the trace missed, not objects the start lacked
        # (``dmaengine-unmap-2``, merged with three caches whose frees mostly reach no
        # program, had room for -60; started empty where the kernel's one slab held an
        # object, the model was 100 % under it at its first sample)
        keep = max(proven if unseen else min(fewest, room), proven if shrunk else 0,
                   len(real), 0)
    real_ptr, real_slot, n_real = _slab_groups(real, order, per_slab)
    real_slots = n_real * per_slab
    other = max(slabs - n_real, 0) * per_slab
    # survivors the trace never frees pin their slabs: no more of those than the kernel
    # ever had slabs (the others start empty, for SLUB to keep or discard)
    pinned = other if unseen else min(other // per_slab, max(least_slabs, 0)) * per_slab
    unknown = min(keep - len(real), real_slots - len(real) + pinned) if pinned < other \
        else keep - len(real)  # kept objects whose addresses the trace never shows
    ptr = FAKE_BASE * (cid + 1) + np.arange(real_slots + other, dtype=np.uint64)
    kept = np.zeros(real_slots + other, dtype=bool)
    ptr[real_slot] = real_ptr
    kept[real_slot] = True
    roles = None
    if unknown >= real_slots - len(real) + other:  # all full, and more slabs if need be
        other = unknown - (real_slots - len(real))
        ptr = FAKE_BASE * (cid + 1) + np.arange(real_slots + other, dtype=np.uint64)
        ptr[real_slot] = real_ptr
        kept = np.ones(real_slots + other, dtype=bool)
        if held is not None:
            roles = np.full(-(-len(ptr) // per_slab), ROLE_FULL, np.int64)
    else:
        counts = np.bincount(real_slot // per_slab, minlength=n_real)
        if held is None:
            share, to_other = _level_fill(counts, pinned // per_slab, per_slab, unknown)
        else:
            profile = _start_profile(slabs, held, per_slab, ncpus, on_cpus, shrunk)
            share, per_other, place = _profile_fill(counts, pinned // per_slab, per_slab,
                                                    unknown, profile)
            # the slabs no survivor pins keep the role of their place in the profile
            roles = np.full(n_real + other // per_slab, ROLE_NODE, np.int64)
            roles[:len(profile[1])] = profile[1][:len(roles)]
            roles[:len(place)] = place
        for k in np.flatnonzero(share):
            free = np.flatnonzero(~kept[k * per_slab:(k + 1) * per_slab])
            kept[k * per_slab + free[:share[k]]] = True
        if held is None:
            kept[real_slots:real_slots + pinned] = _spread(pinned, to_other)
        else:
            kept[real_slots:real_slots + pinned] = (np.arange(pinned) % per_slab
                                                    < np.repeat(per_other, per_slab))
    cpu = (np.arange(len(ptr)) // per_slab) % ncpus
    if roles is None:
        return ptr, cpu, kept, None, None
    return ptr, cpu, kept, roles, _slab_cpus(roles, on_cpus)


def kernel_start(trace: TraceReader) -> dict[str, np.ndarray] | None:
    """Prelude columns (ALLOCs then FREEs at the start time), or None without samples.

    Per cache with ``S`` slabs and ``O`` objects at the first sample and ``P`` pointers
    freed before being allocated: ``L`` objects are kept live, the rest of the slots the
    prelude allocates are freed again. The ``P`` pointers sit on the slabs they really sit
    on (:func:`_slab_groups`: ``B`` model slabs, one per slab page the trace shows them on,
    allocated first), so that a trace that frees a whole pre-recording slab (``drop_caches``)
    empties it in the model too; placed at random among the starting slabs, their frees
    emptied none (+2 409 % for ``proc_inode_cache`` in a ``drop_caches`` run, 44 kernel
    pages against 1 104). The other ``L - P`` kept objects, whose addresses the trace never
    shows, level the ``S`` starting slabs (:func:`_level_fill`): each slab, known or not,
    ends as near one occupancy as capacity allows, the known objects counted in. Packed
    onto the ``S - B`` others instead, they left the known slabs holding only objects the
    trace frees, and the model emptied slabs the kernel kept (``buffer_head`` -24 % in
    classic run 0, where the even spread had +1.7 %). Never more starting slabs than the
    kernel had, on their account; without ``P`` this is the even spread over ``S`` slabs.
    No more than ``O`` of the ``P`` pointers can have been live at the start: a trace that
    frees more (``proc_inode_cache`` in a ``drop_caches`` run: 6 319 pointers against
    2 838 objects, an address freed again and again with no ALLOC between, allocations
    that reached no BPF program) gets the first ``O`` freed; the frees of the rest are
    unmatched, as without a prelude (they made 360 starting slabs where the kernel had
    195).
    ``O`` is not the live objects: ``objects`` in /sys/kernel/slab is the slabs' capacity
    minus the free slots of *node-partial* slabs only (``show_slab_objects``, SO_OBJECTS),
    so the free slots of the CPU slabs count as in use. Those are unknown; each CPU's slab
    is taken as half free: ``L = max(O - min(S, ncpus) * objs_per_slab / 2, P)``. Taking
    ``O`` as live made the small caches full at the start (2 slabs, ``O`` = their capacity),
    and their first allocations took the new slabs that made the +100 % of most of them.
    The free slots of the CPU *partial* lists (up to ``cpu_partial_slabs`` slabs a CPU,
    often empty in a churning cache) count as in use too, and half a slab a CPU missed
    them: ``bio-184`` started with 231 "objects" on 11 slabs, the prelude kept 210
    survivors spread over all 11, no free ever reached them, and the model sat 10-20 pages
    above the kernel for the whole trace (+164 %). So the later samples bound the start
    too (:func:`_net_at_samples`): ``L`` is at most the least ``objects(t) - parked(t) -
    net(t)``, ``parked(t)`` the free slots of the slabs the CPUs hold then, and
    the unknown survivors are spread over no more slabs than the fewest any sample
    reports; the other starting slabs start empty, for SLUB to keep or discard.
    Slab ``k`` is filled and thinned on CPU ``k % ncpus``: a running kernel has a CPU slab
    on each CPU that allocated from the cache, and a prelude on CPU 0 alone left the other
    CPUs none, so their first allocations took new slabs the kernel never needed (2 slabs
    where the kernel had 1 for most small caches of a 2-CPU recording). The slabs of the
    ``P`` pointers come first, so the slabs left active on the CPUs are the others.
    """
    first, geom, order, pre, ncpus, room = _start_inputs(trace)
    if not first:
        return None
    a_ptr, a_cache, a_cpu, a_role, a_scpu, f_ptr, f_cache, f_cpu = [], [], [], [], [], [], [], []
    for cid, (slabs, objects, held) in sorted(first.items()):
        if cid not in geom:
            continue
        per = max(int(geom[cid]["objs_per_slab"]), 1)
        ptr, cpu, kept, roles, cpus = _cache_prelude(
            cid, slabs, objects, room.get(cid, Bounds(objects, slabs, 0, 1 << 62, 0)),
            pre.get(cid, np.zeros(0, np.uint64)), order[cid], per, ncpus, held,
            geom[cid].get("cpu_partial_start"), bool(geom[cid].get("shrunk_at_start")))
        if not len(ptr):
            continue
        a_role.append(np.repeat(roles, per)[:len(ptr)] if roles is not None
                      else np.full(len(ptr), ROLE_NONE, np.int64))
        a_scpu.append(np.repeat(cpus, per)[:len(ptr)] if cpus is not None
                      else np.full(len(ptr), -1, np.int64))
        a_ptr.append(ptr)
        a_cache.append(np.full(len(ptr), cid, np.int64))
        a_cpu.append(cpu)
        f_ptr.append(ptr[~kept])
        f_cache.append(np.full(int((~kept).sum()), cid, np.int64))
        f_cpu.append(cpu[~kept])
    if not a_ptr:
        return None
    n_a, n_f = sum(map(len, a_ptr)), sum(map(len, f_ptr))
    n = n_a + n_f
    start = trace.start_ns
    return {
        "ts_ns": np.full(n, start, np.int64),
        "kind": np.r_[np.full(n_a, EventKind.ALLOC, np.uint8), np.full(n_f, EventKind.FREE,
                                                                       np.uint8)],
        "cpu": np.concatenate(a_cpu + f_cpu).astype(np.int32), "pid": np.zeros(n, np.int32),
        "ptr": np.concatenate(a_ptr + f_ptr), "cache_id": np.concatenate(a_cache + f_cache),
        "memcg_id": np.full(n, ROOT_MEMCG_ID, np.uint64), "gfp": np.zeros(n, np.uint32),
        "aux": np.zeros(n, np.int64), "aux2": np.zeros(n, np.int64),
        "ctx": np.zeros(n, np.uint8),
        SLAB_ROLE: np.r_[np.concatenate(a_role), np.full(n_f, ROLE_NONE, np.int64)],
        SLAB_CPU: np.r_[np.concatenate(a_scpu), np.full(n_f, -1, np.int64)],
    }
