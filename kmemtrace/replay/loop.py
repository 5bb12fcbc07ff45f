"""The compiled event loop: trace events and strategy timers on one clock.

Events arrive sorted by ``(ts_ns, seq)``; a timer due at the same instant as trace events
runs after them (ticks strictly before an event's time fire first). The loop stops before
any event that might overflow an array and returns what to grow; the driver grows it and
calls again from the same position, so a replay is identical however often that happens.

Strategies decide (``pol``, see ``policy.py``); this module acts, using the SLUB model.
"""

from numba import njit

from kmemtrace.errors import UsageError
from kmemtrace.model.charge import (
    mark_object_dead,
    page_cache_changed,
    recharge,
    refill_stock,
    try_charge,
    went_offline,
)
from kmemtrace.model.index import known_index
from kmemtrace.model.objects import (
    obj_delete,
    obj_insert,
    obj_key,
    obj_lookup,
    obj_memcg,
    obj_prefetch,
    obj_slab,
)
from kmemtrace.model.slub import (
    alloc_object,
    discard_slab,
    flush_all,
    free_object,
    may_discard_empty,
    move_slab,
    partial_remove,
    shrink,
)
from kmemtrace.model.state import (
    C_ALLOC_AFTER_OFFLINE,
    C_ALLOCS,
    C_ATOMIC,
    C_CACHES_CREATED,
    C_CACHES_DESTROYED,
    C_CUR_CPU,
    C_DEAD_CACHES,
    C_DEAD_CHANGED,
    C_DEAD_EMPTY_PAGES,
    C_DEAD_FREES,
    C_DEAD_MEMCGS_PINNED,
    C_DEAD_PAGES,
    C_DESTROY_NONEMPTY,
    C_DLOG_LEN,
    C_DYING_MEMCGS,
    C_DYING_PC_MEMCGS,
    C_FREE_AFTER_DESTROY,
    C_FREES,
    C_HASH_COUNT,
    C_IMPLIED_FREES,
    C_INST_FREE_HEAD,
    C_INST_HEAD,
    C_INST_TAIL,
    C_IPI,
    C_LAST_TS,
    C_LIST_LOCK,
    C_LIVE_BYTES,
    C_LIVE_OBJS,
    C_LOST_EVENTS,
    C_META_CACHE_BYTES,
    C_META_MEMCG_BYTES,
    C_META_OBJCG_BYTES,
    C_NEXT_SAMPLE,
    C_NEXT_TICK,
    C_NINST,
    C_OFFLINES,
    C_OUT_OF_ORDER,
    C_PAGE_CACHE_ROWS,
    C_PEAK_DEAD_CACHES,
    C_PEAK_DEAD_EMPTY_PAGES,
    C_PEAK_DEAD_MEMCGS_PINNED,
    C_PEAK_DEAD_PAGES,
    C_PEAK_DYING_MEMCGS,
    C_PEAK_DYING_PC_MEMCGS,
    C_PEAK_LIVE_OBJS,
    C_PEAK_METADATA_BYTES,
    C_PEAK_STRANDED_BYTES,
    C_PEAK_STRANDED_OBJ_BYTES,
    C_PEAK_STRANDED_SLAB_PAGES,
    C_PEAK_TOTAL_PAGES,
    C_PEAK_WASTE_BYTES,
    C_PERCPU,
    C_PRESSURE_EVENTS,
    C_RCU_GP,
    C_REAP_SCAN,
    C_REPARENT_MOVES,
    C_SAMPLE_IDX,
    C_SLAB_FREE_HEAD,
    C_SLAB_HWM,
    C_STOCK_HIT,
    C_STOCK_MISS,
    C_STRANDED_OBJ_BYTES,
    C_STRANDED_SLAB_PAGES,
    C_TOTAL_PAGES,
    C_UNKNOWN_CACHE,
    C_UNKNOWN_FREES,
    C_UNSAFE_DESTROY,
    C_VSAMPLE_IDX,
    D_T_DESTROY,
    D_T_OFFLINE,
    F_DEAD_EMPTY_PAGE_NS,
    F_DEAD_PAGE_NS,
    F_DYING_MEMCG_NS,
    F_DYING_PC_MEMCG_NS,
    F_LIVE_BYTES_NS,
    F_METADATA_BYTES_NS,
    F_SLAB_BYTES_NS,
    F_STRANDED_OBJ_BYTES_NS,
    F_STRANDED_SLAB_PAGE_NS,
    G_CPU_PARTIAL,
    G_MIN_PARTIAL,
    G_OBJS,
    G_SHRINK_AT_SAMPLE,
    G_SIZE,
    H_VAL,
    I_AHEAD,
    I_CACHE,
    I_CHARGE,
    I_CPU_PARTIAL,
    I_EMPTY_PAGES,
    I_FREE_NEXT,
    I_LIVE,
    I_MEMCG,
    I_MIN_PARTIAL,
    I_NEXT,
    I_NR_PAGES,
    I_NR_PARTIAL,
    I_NR_SLABS,
    I_PHEAD,
    I_PREV,
    I_PTAIL,
    I_REF_KILLED,
    I_STATE,
    I_T_DESTROY,
    I_T_LAST_FREE,
    I_T_OFFLINE,
    IN_PAGE_MASK,
    IS_ALIVE,
    IS_DEAD,
    IS_DESTROYED,
    IS_FREE,
    M_LIVE,
    M_OBJCGS,
    M_PAGES,
    M_PARENT,
    M_STATE,
    M_T_OFFLINE,
    MEMCG_BITS,
    MEMCG_MASK,
    MS_OFFLINE,
    MS_ONLINE,
    MS_RELEASED,
    PAGE_SHIFT,
    PAGE_SIZE,
    R_DEAD_CACHES,
    R_DEAD_EMPTY_PAGES,
    R_DEAD_LIVE_PAGES,
    R_DYING_MEMCGS,
    R_DYING_PC_MEMCGS,
    R_LIVE_OBJS,
    R_METADATA_BYTES,
    R_STRANDED_BYTES,
    R_TOTAL_PAGES,
    R_WASTE_BYTES,
    S_ANEXT,
    S_DEAD,
    S_INST,
    S_INUSE,
    S_STATE,
    SL_NODE_PARTIAL,
    V_CACHE,
    V_KERNEL_OBJECTS,
    V_KERNEL_SLABS,
    V_MODEL_OBJECTS,
    V_MODEL_SLABS,
    V_TS,
    Model,
)
from kmemtrace.replay.integrals import close_all, settle, to_floats
from kmemtrace.replay.policy import (
    DESTROY_AFTER_GP,
    DESTROY_FROM_FREE_PATH,
    DESTROY_NEVER,
    PO_DEACTIVATE_DEAD,
    PO_DESTROY_LAST_OBJECT,
    PO_DESTROY_NO_PAGES,
    PO_DESTROY_WITH_MEMCG,
    PO_ERA,
    PO_KILL_REF,
    PO_OBJCG,
    PO_OBJECT_REF,
    PO_OFFLINE_SHRINK,
    PO_PAGE_REF,
    PO_PER_MEMCG_CACHES,
    PO_REAP_ON_PRESSURE,
    PO_REAP_PERIOD_NS,
    PO_REPARENT_EMPTIES,
    PO_REPARENT_SLABS,
    PO_REPOINT,
    PO_SAMPLE_STEP_NS,
    PO_SYNC_IPI,
    PO_TRACK_FULL,
)
from kmemtrace.trace.schema import EventKind

K_ALLOC = int(EventKind.ALLOC)
K_FREE = int(EventKind.FREE)
K_MKDIR = int(EventKind.MEMCG_MKDIR)
K_OFFLINE = int(EventKind.MEMCG_OFFLINE)
K_RELEASE = int(EventKind.MEMCG_RELEASE)
K_PRESSURE = int(EventKind.PRESSURE)
K_PAGE_CACHE = int(EventKind.PAGE_CACHE)
K_LOST = int(EventKind.LOST)
K_SLAB_SAMPLE = int(EventKind.SLAB_SAMPLE)

NEED_NOTHING = 0
NEED_SLABS = 1
NEED_INSTANCES = 2
NEED_OBJECTS = 3
NEED_DLOG = 4

PREFETCH_AHEAD = 8  # events between prefetching an object's table slot and using it

OBJCG_PTR_BYTES = 8  # obj_full_size() = s->size + sizeof(struct obj_cgroup *)
KEEP_ALL = 1 << 62  # a min_partial no node list reaches


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _stranded_slab_pages(m: Model) -> int:
    """Whole slabs held by offline memcgs: all-dead slabs plus empties parked in dead caches."""
    return m.ctr[C_STRANDED_SLAB_PAGES] + m.ctr[C_DEAD_EMPTY_PAGES]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _stranded_bytes(m: Model) -> int:
    return _stranded_slab_pages(m) * PAGE_SIZE + m.ctr[C_STRANDED_OBJ_BYTES]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _waste_bytes(m: Model) -> int:
    return m.ctr[C_TOTAL_PAGES] * PAGE_SIZE - m.ctr[C_LIVE_BYTES]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _metadata_bytes(m: Model) -> int:
    """Dead cache instances, dying memcgs and (objcg) the obj_cgroups of offline memcgs."""
    return (m.ctr[C_DEAD_CACHES] * m.ctr[C_META_CACHE_BYTES]
            + m.ctr[C_DYING_MEMCGS] * m.ctr[C_META_MEMCG_BYTES]
            + m.ctr[C_DEAD_MEMCGS_PINNED] * m.ctr[C_META_OBJCG_BYTES])


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _take_sample(m: Model) -> None:
    j = m.ctr[C_SAMPLE_IDX]
    m.series[R_DEAD_LIVE_PAGES, j] = m.ctr[C_DEAD_PAGES] - m.ctr[C_DEAD_EMPTY_PAGES]
    m.series[R_DEAD_EMPTY_PAGES, j] = m.ctr[C_DEAD_EMPTY_PAGES]
    m.series[R_DEAD_CACHES, j] = m.ctr[C_DEAD_CACHES]
    m.series[R_TOTAL_PAGES, j] = m.ctr[C_TOTAL_PAGES]
    m.series[R_LIVE_OBJS, j] = m.ctr[C_LIVE_OBJS]
    m.series[R_STRANDED_BYTES, j] = _stranded_bytes(m)
    m.series[R_WASTE_BYTES, j] = _waste_bytes(m)
    m.series[R_METADATA_BYTES, j] = _metadata_bytes(m)
    m.series[R_DYING_MEMCGS, j] = m.ctr[C_DYING_MEMCGS]
    m.series[R_DYING_PC_MEMCGS, j] = m.ctr[C_DYING_PC_MEMCGS]
    m.ctr[C_SAMPLE_IDX] = j + 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _peak(m: Model, peak: int, value: int) -> None:
    if value > m.ctr[peak]:
        m.ctr[peak] = value


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _update_peaks(m: Model) -> None:
    """Peaks and integrals, after every event and timer: two states at one timestamp both
    happened. What changes *within* one event (Way #3 marks a cache dead and empties it)
    is no state.

    Most events change only pages and live objects. The offline-memcg values are looked at
    only after one of their counters changed (``C_DEAD_CHANGED``, set wherever they are
    written): a value that did not change cannot pass its peak, and its integral's interval
    stays open (``replay/integrals.py``)."""
    now = m.ctr[C_LAST_TS]
    settle(m.integ, F_LIVE_BYTES_NS, m.ctr[C_LIVE_BYTES], now)
    settle(m.integ, F_SLAB_BYTES_NS, m.ctr[C_TOTAL_PAGES] * PAGE_SIZE, now)
    _peak(m, C_PEAK_TOTAL_PAGES, m.ctr[C_TOTAL_PAGES])
    _peak(m, C_PEAK_LIVE_OBJS, m.ctr[C_LIVE_OBJS])
    _peak(m, C_PEAK_WASTE_BYTES, _waste_bytes(m))
    if m.ctr[C_DEAD_CHANGED] == 0:
        return
    m.ctr[C_DEAD_CHANGED] = 0
    settle(m.integ, F_DEAD_PAGE_NS, m.ctr[C_DEAD_PAGES], now)
    settle(m.integ, F_DEAD_EMPTY_PAGE_NS, m.ctr[C_DEAD_EMPTY_PAGES], now)
    settle(m.integ, F_STRANDED_SLAB_PAGE_NS, _stranded_slab_pages(m), now)
    settle(m.integ, F_STRANDED_OBJ_BYTES_NS, m.ctr[C_STRANDED_OBJ_BYTES], now)
    settle(m.integ, F_METADATA_BYTES_NS, _metadata_bytes(m), now)
    settle(m.integ, F_DYING_MEMCG_NS, m.ctr[C_DYING_MEMCGS], now)
    settle(m.integ, F_DYING_PC_MEMCG_NS, m.ctr[C_DYING_PC_MEMCGS], now)
    _peak(m, C_PEAK_DEAD_PAGES, m.ctr[C_DEAD_PAGES])
    _peak(m, C_PEAK_DEAD_EMPTY_PAGES, m.ctr[C_DEAD_EMPTY_PAGES])
    _peak(m, C_PEAK_DEAD_CACHES, m.ctr[C_DEAD_CACHES])
    _peak(m, C_PEAK_DEAD_MEMCGS_PINNED, m.ctr[C_DEAD_MEMCGS_PINNED])
    _peak(m, C_PEAK_STRANDED_SLAB_PAGES, _stranded_slab_pages(m))
    _peak(m, C_PEAK_STRANDED_OBJ_BYTES, m.ctr[C_STRANDED_OBJ_BYTES])
    _peak(m, C_PEAK_STRANDED_BYTES, _stranded_bytes(m))
    _peak(m, C_PEAK_METADATA_BYTES, _metadata_bytes(m))
    _peak(m, C_PEAK_DYING_MEMCGS, m.ctr[C_DYING_MEMCGS])
    _peak(m, C_PEAK_DYING_PC_MEMCGS, m.ctr[C_DYING_PC_MEMCGS])


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _advance(m: Model, pol, t: int) -> None:
    """Move the clock to ``t``, taking due samples."""
    last = m.ctr[C_LAST_TS]
    if t <= last:
        return
    step = pol[PO_SAMPLE_STEP_NS]
    n = m.series.shape[1]
    while m.ctr[C_SAMPLE_IDX] < n and m.ctr[C_NEXT_SAMPLE] <= t:
        _take_sample(m)
        m.ctr[C_NEXT_SAMPLE] += step
    m.ctr[C_LAST_TS] = t


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _instance(m: Model, cache: int, memcg: int) -> int:
    """The cache instance for (root cache, memcg), created on first use, in a free slot if
    there is one (``_destroy`` frees them)."""
    inst = m.inst_of[cache, memcg]
    if inst >= 0:
        return inst
    inst = m.ctr[C_INST_FREE_HEAD]
    if inst >= 0:
        m.ctr[C_INST_FREE_HEAD] = m.inst[I_FREE_NEXT, inst]
    else:
        inst = m.ctr[C_NINST]
        m.ctr[C_NINST] += 1
    m.inst[:, inst] = 0
    m.inst[I_CACHE, inst] = cache
    m.inst[I_MEMCG, inst] = memcg
    m.inst[I_CHARGE, inst] = memcg
    m.inst[I_STATE, inst] = IS_ALIVE
    m.inst[I_PHEAD, inst] = -1
    m.inst[I_PTAIL, inst] = -1
    m.inst[I_AHEAD, inst] = -1
    m.inst[I_T_OFFLINE, inst] = -1
    m.inst[I_T_DESTROY, inst] = -1
    m.inst[I_T_LAST_FREE, inst] = -1
    m.inst[I_MIN_PARTIAL, inst] = m.geom[G_MIN_PARTIAL, cache]
    m.inst[I_CPU_PARTIAL, inst] = m.geom[G_CPU_PARTIAL, cache]
    m.inst_of[cache, memcg] = inst
    tail = m.ctr[C_INST_TAIL]
    m.inst[I_PREV, inst] = tail
    m.inst[I_NEXT, inst] = -1
    if tail >= 0:
        m.inst[I_NEXT, tail] = inst
    else:
        m.ctr[C_INST_HEAD] = inst
    m.ctr[C_INST_TAIL] = inst
    m.ctr[C_CACHES_CREATED] += 1
    return inst


@njit(cache=True, nogil=True, _nrt=False)
def _online_ancestor(m: Model, memcg: int) -> int:
    while memcg != 0 and m.memcg[M_STATE, memcg] != MS_ONLINE:
        memcg = m.memcg[M_PARENT, memcg]
    return memcg


@njit(cache=True, nogil=True, _nrt=False)
def _mark_dead(m: Model, inst: int, now: int) -> None:
    m.inst[I_STATE, inst] = IS_DEAD
    m.inst[I_T_OFFLINE, inst] = now
    m.ctr[C_DEAD_CACHES] += 1
    m.ctr[C_DEAD_CHANGED] = 1
    m.ctr[C_DEAD_PAGES] += m.inst[I_NR_PAGES, inst]
    m.ctr[C_DEAD_EMPTY_PAGES] += m.inst[I_EMPTY_PAGES, inst]


@njit(cache=True, nogil=True, _nrt=False)
def _destroy(m: Model, pol, inst: int, now: int) -> None:
    """``kmem_cache_destroy()``/``shutdown_cache()``: flush, free every empty slab, retire."""
    flush_all(m, inst, pol[PO_ERA])
    s = m.inst[I_AHEAD, inst]
    while s >= 0:
        nxt = m.slab[S_ANEXT, s]
        if m.slab[S_INUSE, s] == 0:
            if m.slab[S_STATE, s] == SL_NODE_PARTIAL:
                partial_remove(m, inst, s)
            discard_slab(m, s)
        else:
            m.ctr[C_DESTROY_NONEMPTY] += 1
        s = nxt
    if m.inst[I_STATE, inst] == IS_DEAD:
        m.ctr[C_DEAD_CHANGED] = 1
        m.ctr[C_DEAD_CACHES] -= 1
        m.ctr[C_DEAD_PAGES] -= m.inst[I_NR_PAGES, inst]
        m.ctr[C_DEAD_EMPTY_PAGES] -= m.inst[I_EMPTY_PAGES, inst]
    m.inst[I_STATE, inst] = IS_DESTROYED
    m.inst[I_T_DESTROY, inst] = now
    m.ctr[C_CACHES_DESTROYED] += 1
    if m.inst[I_NR_SLABS, inst] == 0:
        _free_instance(m, inst)


@njit(cache=True, nogil=True, _nrt=False)
def _free_instance(m: Model, inst: int) -> None:
    """A destroyed cache with no slab left: its times go to ``dlog``, its slot to the free
    list. Nothing points at it any more (its CPUs were flushed, ``inst_of`` forgets it); a
    later (cache, memcg) of a re-created memcg id gets a new instance, as in the kernel."""
    j = m.ctr[C_DLOG_LEN]
    m.dlog[D_T_OFFLINE, j] = m.inst[I_T_OFFLINE, inst]
    m.dlog[D_T_DESTROY, j] = m.inst[I_T_DESTROY, inst]
    m.ctr[C_DLOG_LEN] = j + 1
    m.inst_of[m.inst[I_CACHE, inst], m.inst[I_MEMCG, inst]] = -1
    nxt, prv = m.inst[I_NEXT, inst], m.inst[I_PREV, inst]
    if prv >= 0:
        m.inst[I_NEXT, prv] = nxt
    else:
        m.ctr[C_INST_HEAD] = nxt
    if nxt >= 0:
        m.inst[I_PREV, nxt] = prv
    else:
        m.ctr[C_INST_TAIL] = prv
    m.inst[I_STATE, inst] = IS_FREE
    m.inst[I_FREE_NEXT, inst] = m.ctr[C_INST_FREE_HEAD]
    m.ctr[C_INST_FREE_HEAD] = inst


@njit(cache=True, nogil=True, _nrt=False)
def _destroy_after_gp(m: Model, pol, inst: int, now: int) -> None:
    m.ctr[C_RCU_GP] += 1
    _destroy(m, pol, inst, now)


@njit(cache=True, nogil=True, _nrt=False)
def _reparent(m: Model, pol, inst: int, now: int) -> None:
    """Way #3: every slab of a dead cache moves to the parent memcg's cache; destroy.

    With ``PO_REPARENT_EMPTIES`` (the RFC's "slabs of dead caches could be reused by parent
    memcg"), CPU slabs are flushed without discarding and empty slabs move too: the
    parent's ``min_partial`` decides, slab by slab as in ``__slab_free``, which it keeps.
    Without it, the dead cache is shrunk first and only slabs with objects move."""
    cache = m.inst[I_CACHE, inst]
    parent = _online_ancestor(m, m.memcg[M_PARENT, m.inst[I_MEMCG, inst]])
    target = _instance(m, cache, parent)
    era = pol[PO_ERA]
    if pol[PO_REPARENT_EMPTIES]:
        m.inst[I_MIN_PARTIAL, inst] = KEEP_ALL  # the flush parks everything on the node
        flush_all(m, inst, era)
    else:
        shrink(m, inst, era)  # flush CPUs, drop empties: only live slabs move
    m.ctr[C_LIST_LOCK] += 2  # both caches' node lists
    s = m.inst[I_AHEAD, inst]
    while s >= 0:
        nxt = m.slab[S_ANEXT, s]
        move_slab(m, s, target)
        m.ctr[C_REPARENT_MOVES] += 1
        if (m.slab[S_INUSE, s] == 0 and m.slab[S_STATE, s] == SL_NODE_PARTIAL
                and may_discard_empty(m, target, era)):
            partial_remove(m, target, s)
            discard_slab(m, s)
        s = nxt
    m.inst[I_LIVE, target] += m.inst[I_LIVE, inst]
    m.inst[I_LIVE, inst] = 0
    _destroy_after_gp(m, pol, inst, now)


@njit(cache=True, nogil=True, _nrt=False)
def _release_memcg_caches(m: Model, pol, memcg: int, now: int) -> None:
    """v4.0 ``mem_cgroup_css_free`` -> ``memcg_destroy_kmem_caches``: the memcg's last
    charged page is gone, so its css is freed (after an RCU grace period) and every dead
    cache of it is destroyed together."""
    m.ctr[C_RCU_GP] += 1
    for cache in range(m.inst_of.shape[0]):
        inst = m.inst_of[cache, memcg]
        if inst >= 0 and m.inst[I_STATE, inst] == IS_DEAD:
            _destroy(m, pol, inst, now)


@njit(cache=True, nogil=True, _nrt=False)
def _repoint_caches(m: Model, memcg: int) -> None:
    """v5.3 ``memcg_deactivate_kmem_caches(memcg, parent)``: every cache still pointing at
    ``memcg`` (its own and those spliced from its children) now points at the parent."""
    parent = _online_ancestor(m, m.memcg[M_PARENT, memcg])
    inst = m.ctr[C_INST_HEAD]
    while inst >= 0:
        if m.inst[I_CHARGE, inst] == memcg and m.inst[I_STATE, inst] != IS_DESTROYED:
            recharge(m, inst, parent)
            m.ctr[C_REPARENT_MOVES] += 1
        inst = m.inst[I_NEXT, inst]


@njit(cache=True, nogil=True, _nrt=False)
def _objects_now_dead(m: Model, pol, memcg: int) -> None:
    """Objects keep the memcg they were charged to: every live one of ``memcg`` is now a
    dead memcg's object, wherever its slab is.

    With a cache per memcg, every live object in ``memcg``'s instances is its own or an
    already-offline descendant's (reparented slabs, redirected allocations), so its slabs
    become wholly dead without looking at objects. Shared caches (objcg) mix memcgs in a
    slab: the live-object table is walked, once per offline of a memcg that has objects,
    and only until the last of them: ``M_LIVE`` counts exactly the table's rows of the
    memcg (both change only together, in :func:`_alloc` and :func:`_free`), so the rest of
    the table holds none and the same objects are marked in the same order."""
    if pol[PO_PER_MEMCG_CACHES]:
        for cache in range(m.inst_of.shape[0]):
            inst = m.inst_of[cache, memcg]
            if inst < 0:
                continue
            s = m.inst[I_AHEAD, inst]
            while s >= 0:
                dead = m.slab[S_DEAD, s]
                if dead < m.slab[S_INUSE, s]:
                    mark_object_dead(m, s, m.slab[S_INUSE, s] - dead)
                s = m.slab[S_ANEXT, s]
        return
    h = m.hobj
    left = m.memcg[M_LIVE, memcg]
    for i in range(h.shape[0]):
        if (h[i, H_VAL] & MEMCG_MASK) == memcg:  # an empty slot's word is 0; memcg is not
            mark_object_dead(m, h[i, H_VAL] >> MEMCG_BITS, 1)
            left -= 1
            if left == 0:
                break


@njit(cache=True, nogil=True, _nrt=False)
def _memcg_offline(m: Model, pol, memcg: int, now: int) -> None:
    """``mem_cgroup_css_offline()``: each strategy's offline decisions, in kernel order."""
    if memcg == 0 or m.memcg[M_STATE, memcg] != MS_ONLINE:
        return
    m.memcg[M_STATE, memcg] = MS_OFFLINE
    m.memcg[M_T_OFFLINE, memcg] = now
    m.ctr[C_OFFLINES] += 1
    went_offline(m, memcg)
    if m.memcg[M_LIVE, memcg] > 0:
        m.ctr[C_DEAD_MEMCGS_PINNED] += 1
        m.ctr[C_DEAD_CHANGED] = 1
        _objects_now_dead(m, pol, memcg)
    if pol[PO_OBJCG]:
        # memcg_reparent_objcgs(): the active objcg and every objcg on the list move.
        parent = _online_ancestor(m, m.memcg[M_PARENT, memcg])
        m.ctr[C_REPARENT_MOVES] += m.memcg[M_OBJCGS, memcg]
        m.memcg[M_OBJCGS, parent] += m.memcg[M_OBJCGS, memcg]
        m.memcg[M_OBJCGS, memcg] = 0
        m.ctr[C_RCU_GP] += 1  # percpu_ref_kill of the active objcg
    if not pol[PO_PER_MEMCG_CACHES]:
        return
    era = pol[PO_ERA]
    for cache in range(m.inst_of.shape[0]):
        inst = m.inst_of[cache, memcg]
        if inst < 0 or m.inst[I_STATE, inst] != IS_ALIVE:
            continue
        _mark_dead(m, inst, now)
        if pol[PO_KILL_REF]:
            m.inst[I_REF_KILLED, inst] = 1
            m.ctr[C_RCU_GP] += 1
        if pol[PO_REPARENT_SLABS]:
            _reparent(m, pol, inst, now)
            continue
        if pol[PO_DEACTIVATE_DEAD]:
            m.inst[I_MIN_PARTIAL, inst] = 0
            m.inst[I_CPU_PARTIAL, inst] = 0
            # So that a concurrent put_cpu_partial() sees cpu_partial == 0: v4.0 interrupts
            # every CPU (kick_all_cpus_sync), v4.7+ waits a grace period.
            if pol[PO_SYNC_IPI]:
                m.ctr[C_IPI] += m.pcpu.shape[2]
            else:
                m.ctr[C_RCU_GP] += 1
        if pol[PO_OFFLINE_SHRINK]:
            shrink(m, inst, era)
        if pol[PO_DESTROY_LAST_OBJECT]:
            if m.inst[I_LIVE, inst] == 0:
                _destroy(m, pol, inst, now)
        elif pol[PO_DESTROY_WITH_MEMCG]:
            continue  # below, once every cache of the memcg is done
        elif m.inst[I_NR_PAGES, inst] == 0:
            # Destruction work found the cache empty: process context, no free in flight.
            if pol[PO_DESTROY_NO_PAGES] == DESTROY_FROM_FREE_PATH:
                _destroy(m, pol, inst, now)
            else:
                _destroy_after_gp(m, pol, inst, now)
    if pol[PO_REPOINT]:
        _repoint_caches(m, memcg)
    if pol[PO_DESTROY_WITH_MEMCG] and m.memcg[M_PAGES, memcg] == 0:
        _release_memcg_caches(m, pol, memcg, now)


@njit(cache=True, nogil=True, _nrt=False)
def _reap(m: Model, pol, now: int) -> None:
    """Way #2: shrink every dead cache; destroy those left empty."""
    if m.ctr[C_DEAD_CACHES] == 0:
        return
    ncpu = m.pcpu.shape[2]
    era = pol[PO_ERA]
    inst = m.ctr[C_INST_HEAD]
    while inst >= 0:
        nxt = m.inst[I_NEXT, inst]  # a destroyed cache leaves the list
        if m.inst[I_STATE, inst] == IS_DEAD:
            m.ctr[C_REAP_SCAN] += ncpu + m.inst[I_NR_PARTIAL, inst]
            shrink(m, inst, era)
            if m.inst[I_NR_PAGES, inst] == 0:
                _destroy_after_gp(m, pol, inst, now)
        inst = nxt


# At most this many Way #2 reaper ticks per replay. The default 2 s period gives 43,200 a
# day, so 10^8 is over six years of trace: only a damaged clock (meta.json allows 2^60 ns,
# 36 years) or a period far too short for the span gets there, and each tick walks every
# dead cache, so past it a lane would run for hours with nothing to show.
MAX_REAP_TICKS = 10**8


def check_reaper_ticks(strategy: str, pol, span_ns: int) -> None:
    """Refuse, before any batch is replayed, a span and period that would tick the reaper
    more than :data:`MAX_REAP_TICKS` times (:func:`_run_timers` fires every one)."""
    period = int(pol[PO_REAP_PERIOD_NS])
    if period > 0 and span_ns // period > MAX_REAP_TICKS:
        raise UsageError(
            f"{strategy}: a reaper tick every {period:,} ns over the trace's "
            f"{span_ns / 1e9:,.0f} s is {span_ns // period:,} ticks, more than "
            f"{MAX_REAP_TICKS:,}: the trace's clock is damaged or the period is too short",
            tip="check meta.json's clock and the parts' ts_min/ts_max, or pass a longer "
                "--param period=")


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _run_timers(m: Model, pol, t: int) -> None:
    """Fire reaper ticks strictly before ``t`` (ties go to trace events first)."""
    period = pol[PO_REAP_PERIOD_NS]
    if period <= 0:
        return
    while m.ctr[C_NEXT_TICK] < t:
        tick = m.ctr[C_NEXT_TICK]
        _advance(m, pol, tick)
        m.ctr[C_CUR_CPU] = 0  # the reaper's work item
        _reap(m, pol, tick)
        _update_peaks(m)
        m.ctr[C_NEXT_TICK] = tick + period


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _owner(m: Model, memcg: int) -> int:
    """:func:`_online_ancestor`, with its common case (the memcg is online) inline: the obj
    stock asks on most objcg events, and a compiled call passes the Model's arrays."""
    if memcg == 0 or m.memcg[M_STATE, memcg] == MS_ONLINE:
        return memcg
    return _online_ancestor(m, memcg)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _stock_drain(m: Model, memcg: int, nr_bytes: int) -> None:
    """``drain_obj_stock()`` of a stock that held ``nr_bytes`` of ``memcg`` (-1: none):
    whole pages go back through the memcg stock of the objcg's current owner; the sub-page
    rest stays in ``objcg->nr_charged_bytes``. The caller empties or refills the stock.

    The stock's two fields come in as values (``nr_bytes >= 0``, so shifts and masks are
    the page divisions): objcg's stock changes memcg on ~90 % of its events, and reading
    the fields once, not after every store to the model, is what keeps this path short."""
    if memcg < 0:
        return
    if nr_bytes >= PAGE_SIZE:
        refill_stock(m, _owner(m, memcg), nr_bytes >> PAGE_SHIFT)
    if nr_bytes & IN_PAGE_MASK:
        m.ctr[C_ATOMIC] += 1  # atomic_add(nr_bytes, &objcg->nr_charged_bytes)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _stock_charge(m: Model, cpu: int, memcg: int, size: int) -> None:
    """``obj_cgroup_charge()`` through the per-CPU obj stock (``consume_obj_stock``)."""
    cached = m.stock[0, cpu]
    nr_bytes = m.stock[1, cpu]
    if cached == memcg:
        if nr_bytes >= size:
            m.stock[1, cpu] = nr_bytes - size
            m.ctr[C_STOCK_HIT] += 1
            return
    else:
        _stock_drain(m, cached, nr_bytes)
        m.stock[0, cpu] = memcg
        nr_bytes = 0
    m.ctr[C_STOCK_MISS] += 1
    pages = (size - nr_bytes + IN_PAGE_MASK) >> PAGE_SHIFT  # size > nr_bytes >= 0 here
    try_charge(m, memcg, pages)  # obj_cgroup_charge_pages(): through the memcg stock
    m.stock[1, cpu] = nr_bytes + (pages << PAGE_SHIFT) - size


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _stock_uncharge(m: Model, cpu: int, memcg: int, size: int) -> None:
    """``refill_obj_stock()``: whole pages beyond one are uncharged."""
    cached = m.stock[0, cpu]
    nr_bytes = m.stock[1, cpu]
    if cached != memcg:
        _stock_drain(m, cached, nr_bytes)
        m.stock[0, cpu] = memcg
        nr_bytes = 0
    nr_bytes += size
    if nr_bytes > PAGE_SIZE:
        refill_stock(m, _owner(m, memcg), nr_bytes >> PAGE_SHIFT)
        nr_bytes &= IN_PAGE_MASK
    m.stock[1, cpu] = nr_bytes


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _free(m: Model, pol, slot: int, cpu: int, now: int) -> None:
    s = obj_slab(m, slot)
    memcg = obj_memcg(m, slot)
    obj_delete(m, slot)
    inst = known_index(m.slab[S_INST, s])
    cache = known_index(m.inst[I_CACHE, inst])
    size = m.geom[G_SIZE, cache]
    state = m.inst[I_STATE, inst]
    per_memcg = m.inst[I_MEMCG, inst] != 0
    if state == IS_DESTROYED:
        m.ctr[C_FREE_AFTER_DESTROY] += 1
    if per_memcg and pol[PO_OBJECT_REF]:
        m.ctr[C_ATOMIC if m.inst[I_REF_KILLED, inst] else C_PERCPU] += 1
    if per_memcg and pol[PO_TRACK_FULL]:
        m.ctr[C_PERCPU] += 2  # percpu_ref get/put around the free
    if memcg != 0 and pol[PO_OBJCG]:
        _stock_uncharge(m, cpu, memcg, size + OBJCG_PTR_BYTES)
        m.ctr[C_ATOMIC if m.memcg[M_STATE, memcg] != MS_ONLINE else C_PERCPU] += 1
    if memcg != 0 and m.memcg[M_STATE, memcg] != MS_ONLINE:
        mark_object_dead(m, s, -1)
    free_object(m, s, inst, m.geom[G_OBJS, cache], cpu, pol[PO_ERA],
                per_memcg and pol[PO_TRACK_FULL] != 0)
    m.inst[I_LIVE, inst] -= 1
    if memcg != 0:
        m.memcg[M_LIVE, memcg] -= 1
        if m.memcg[M_LIVE, memcg] == 0 and m.memcg[M_STATE, memcg] != MS_ONLINE:
            m.ctr[C_DEAD_MEMCGS_PINNED] -= 1
            m.ctr[C_DEAD_CHANGED] = 1
    m.ctr[C_LIVE_OBJS] -= 1
    m.ctr[C_LIVE_BYTES] -= size
    m.ctr[C_FREES] += 1
    if state != IS_DEAD:
        return
    m.ctr[C_DEAD_FREES] += 1
    m.inst[I_T_LAST_FREE, inst] = now
    if pol[PO_DESTROY_LAST_OBJECT]:
        if m.inst[I_LIVE, inst] == 0:
            _destroy(m, pol, inst, now)  # percpu_ref release: the ref covered the free
    elif pol[PO_DESTROY_WITH_MEMCG]:
        g = m.inst[I_MEMCG, inst]
        if m.memcg[M_PAGES, g] == 0:
            _release_memcg_caches(m, pol, g, now)
    elif m.inst[I_NR_PAGES, inst] == 0 and pol[PO_DESTROY_NO_PAGES] != DESTROY_NEVER:
        how = pol[PO_DESTROY_NO_PAGES]
        if how == DESTROY_FROM_FREE_PATH:
            m.ctr[C_UNSAFE_DESTROY] += 1
            _destroy(m, pol, inst, now)
        elif how == DESTROY_AFTER_GP:
            _destroy_after_gp(m, pol, inst, now)
        else:
            _destroy(m, pol, inst, now)  # the page ref's release: it covered the free


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _alloc(m: Model, pol, key, cache: int, memcg: int, cpu: int, now: int) -> None:
    slot = obj_lookup(m, key)
    if slot >= 0:
        m.ctr[C_IMPLIED_FREES] += 1  # its free was not seen (bulk free, lost event)
        _free(m, pol, slot, cpu, now)
    if memcg != 0 and m.memcg[M_STATE, memcg] != MS_ONLINE:
        m.ctr[C_ALLOC_AFTER_OFFLINE] += 1
        memcg = known_index(_online_ancestor(m, memcg))
    per_memcg = pol[PO_PER_MEMCG_CACHES] != 0 and memcg != 0
    inst = known_index(_instance(m, cache, memcg if per_memcg else 0))
    size = m.geom[G_SIZE, cache]
    if per_memcg and pol[PO_OBJECT_REF]:
        m.ctr[C_PERCPU] += 1
    if per_memcg and pol[PO_PAGE_REF]:
        m.ctr[C_PERCPU] += 2  # memcg_kmem_get_cache() tryget, memcg_kmem_put_cache() put
    if memcg != 0 and pol[PO_OBJCG]:
        _stock_charge(m, cpu, memcg, size + OBJCG_PTR_BYTES)
        m.ctr[C_PERCPU] += 1  # obj_cgroup_get()
    s = alloc_object(m, inst, m.geom[G_OBJS, cache], cpu, pol[PO_ERA],
                     per_memcg and pol[PO_TRACK_FULL] != 0)
    obj_insert(m, key, s, memcg)
    m.inst[I_LIVE, inst] += 1
    if memcg != 0:
        m.memcg[M_LIVE, memcg] += 1
    m.ctr[C_LIVE_OBJS] += 1
    m.ctr[C_LIVE_BYTES] += size
    m.ctr[C_ALLOCS] += 1


@njit(cache=True, nogil=True, _nrt=False)
def _pair_slab_sample(m: Model, cache: int, slabs: int, objects: int, now: int) -> None:
    """Model validation: next to the kernel's count, what the model holds for the cache."""
    j = m.ctr[C_VSAMPLE_IDX]
    if cache < 0 or j >= m.vsample.shape[1]:
        return
    model_slabs = 0
    model_objects = 0
    for g in range(m.inst_of.shape[1]):
        inst = m.inst_of[cache, g]
        if inst >= 0:
            model_slabs += m.inst[I_NR_SLABS, inst]
            model_objects += m.inst[I_LIVE, inst]
    m.vsample[V_TS, j] = now
    m.vsample[V_CACHE, j] = cache
    m.vsample[V_KERNEL_SLABS, j] = slabs
    m.vsample[V_KERNEL_OBJECTS, j] = objects
    m.vsample[V_MODEL_SLABS, j] = model_slabs
    m.vsample[V_MODEL_OBJECTS, j] = model_objects
    m.ctr[C_VSAMPLE_IDX] = j + 1


@njit(cache=True, nogil=True, _nrt=False)
def _shrunk_before_sample(m: Model, pol, cache: int) -> None:
    """``record --shrink-at-start`` shrank the cache right before its first sample was
    read: every instance of it is shrunk here, as the sysfs ``shrink`` file does (CPU
    slabs flushed, empty slabs discarded; v5.3-v5.8 ``kmem_cache_shrink_all`` took the
    memcg children too). Without it, slabs that the trace's first few ms of events emptied
    stay parked in the model but not in the kernel (``seq_file``: 2 model slabs, 1 kernel,
    at its first sample of a churn run)."""
    m.geom[G_SHRINK_AT_SAMPLE, cache] = 0
    for g in range(m.inst_of.shape[1]):
        inst = m.inst_of[cache, g]
        if inst >= 0:
            shrink(m, inst, pol[PO_ERA])


@njit(cache=True, nogil=True, _nrt=False)
def _other_event(m: Model, pol, k: int, cache: int, g: int, aux: int, aux2: int,
                 t: int) -> None:
    """Every kind but ALLOC and FREE: a few per thousand events, so a call of its own.

    Why not inline in :func:`run_events`: the life-cycle paths (offline, reaping) are
    large, and inlined they share the loop with the hot ALLOC/FREE paths, whose values the
    compiler then keeps on the stack rather than in registers."""
    if k == K_MKDIR:
        if g != 0:
            m.memcg[M_PARENT, g] = aux
            m.memcg[M_STATE, g] = MS_ONLINE
            m.memcg[M_OBJCGS, g] = 1
    elif k == K_OFFLINE:
        _memcg_offline(m, pol, g, t)
    elif k == K_RELEASE:
        if g != 0 and m.memcg[M_STATE, g] == MS_OFFLINE:
            m.memcg[M_STATE, g] = MS_RELEASED
    elif k == K_PRESSURE:
        m.ctr[C_PRESSURE_EVENTS] += 1
        if pol[PO_REAP_ON_PRESSURE]:
            _reap(m, pol, t)
    elif k == K_PAGE_CACHE:
        m.ctr[C_PAGE_CACHE_ROWS] += 1
        page_cache_changed(m, g, aux)
    elif k == K_LOST:
        m.ctr[C_LOST_EVENTS] += aux
    elif k == K_SLAB_SAMPLE:
        if cache >= 0 and m.geom[G_SHRINK_AT_SAMPLE, cache]:
            _shrunk_before_sample(m, pol, cache)
        _pair_slab_sample(m, cache, aux, aux2, t)


@njit(cache=True, nogil=True, _nrt=False)
def run_events(m: Model, pol, ts, kind, cpu, ptr, cache, memcg, aux, aux2, start: int):
    """Replay events ``start..`` of one chunk; return ``(next_index, NEED_*)``."""
    n = ts.shape[0]
    ninst_margin = m.inst_of.shape[0] + 1
    for i in range(start, n):
        if m.ctr[C_SLAB_FREE_HEAD] < 0 and m.ctr[C_SLAB_HWM] + 1 >= m.slab.shape[1]:
            return i, NEED_SLABS
        if m.ctr[C_NINST] + ninst_margin >= m.inst.shape[1]:
            return i, NEED_INSTANCES
        if m.ctr[C_DLOG_LEN] + m.ctr[C_NINST] >= m.dlog.shape[1]:
            return i, NEED_DLOG  # one event destroys at most every instance there is
        if 2 * (m.ctr[C_HASH_COUNT] + 1) > m.hobj.shape[0]:
            return i, NEED_OBJECTS
        if i + PREFETCH_AHEAD < n:
            obj_prefetch(m, obj_key(ptr[i + PREFETCH_AHEAD]))
        t = ts[i]
        if t < m.ctr[C_LAST_TS]:
            m.ctr[C_OUT_OF_ORDER] += 1
            t = m.ctr[C_LAST_TS]
        _run_timers(m, pol, t)
        _advance(m, pol, t)
        c = known_index(cpu[i])  # prepare() keeps it in 0..ncpu-1
        m.ctr[C_CUR_CPU] = c
        k = kind[i]
        if k == K_ALLOC:
            if cache[i] < 0 or ptr[i] == 0:
                m.ctr[C_UNKNOWN_CACHE] += 1
            else:
                _alloc(m, pol, obj_key(ptr[i]), known_index(cache[i]),
                       known_index(memcg[i]), c, t)
        elif k == K_FREE:
            slot = obj_lookup(m, obj_key(ptr[i]))
            if slot < 0:
                m.ctr[C_UNKNOWN_FREES] += 1
            else:
                _free(m, pol, known_index(slot), c, t)
        else:
            _other_event(m, pol, k, cache[i], memcg[i], aux[i], aux2[i], t)
        _update_peaks(m)
    return n, NEED_NOTHING


@njit(cache=True, nogil=True, _nrt=False)
def _finish(m: Model, pol, end_ns: int) -> None:
    _run_timers(m, pol, end_ns + 1)
    _advance(m, pol, end_ns)
    _update_peaks(m)
    close_all(m.integ, m.ctr[C_LAST_TS])
    while m.ctr[C_SAMPLE_IDX] < m.series.shape[1]:
        _take_sample(m)


def finish(m: Model, pol, end_ns: int) -> None:
    """Run timers and integrals up to the end of the trace; fill the remaining samples;
    the integrals become the floats ``m.fctr`` the metrics read."""
    _finish(m, pol, end_ns)
    to_floats(m.integ, m.fctr)
