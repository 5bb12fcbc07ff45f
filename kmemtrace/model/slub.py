"""SLUB, as far as the dead-cache question needs it: where slabs sit and when pages go back.

Each function mirrors the kernel function named in its docstring (mm/slub.c; the rules are
those of research/kernel-strategies.md §3.3-3.5). Objects are counted, not placed: a slab
is ``objects`` slots with an ``inuse`` count, which is all the parking rules look at.

Empty slabs can park (a) as a CPU's active slab, (b) on every CPU's partial stack up to
the era's budget, and (c) on the node partial list while ``nr_partial`` is below
``min_partial``. Only flush/shrink/destroy release them. That is why the 2014 design leaks.

All page accounting goes through :func:`_pages_changed` so that the pages of dead cache
instances and their empty-slab part are maintained in one place; slabs are charged and
uncharged to their cache's memcg in :func:`new_slab` / :func:`discard_slab`
(``model/charge.py``). Peaks are taken by the replay loop after every event.

What a free or an allocation may reach is inlined (``inline="always"``): a compiled call
passes the Model's fifteen arrays field by field, ~135 words pushed on the stack, and in
shared (objcg) caches a free meets a full slab often enough that ``put_cpu_partial`` as a
call was a tenth of objcg's loop (issue 13). Rare paths (a new or discarded slab, a
flush) stay calls, which keeps the compiled loop small.
"""

from numba import njit

from kmemtrace.model.charge import charge_slab, memcg_pages_changed, strand, uncharge_slab
from kmemtrace.model.eras import ERA_3_14, ERA_5_15, ERA_6_8
from kmemtrace.model.index import known_index
from kmemtrace.model.state import (
    C_DEAD_CHANGED,
    C_DEAD_EMPTY_PAGES,
    C_DEAD_PAGES,
    C_FLUSH,
    C_IPI,
    C_LIST_LOCK,
    C_PAGES_ALLOC,
    C_PAGES_FREED,
    C_SLAB_FREE_HEAD,
    C_SLAB_HWM,
    C_TOTAL_PAGES,
    G_OBJS,
    G_PAGES,
    I_AHEAD,
    I_CACHE,
    I_CHARGE,
    I_CPU_PARTIAL,
    I_EMPTY_PAGES,
    I_MIN_PARTIAL,
    I_NR_PAGES,
    I_NR_PARTIAL,
    I_NR_SLABS,
    I_PHEAD,
    I_PTAIL,
    I_STATE,
    IS_DEAD,
    P_ACTIVE,
    P_PHEAD,
    P_PSLABS,
    S_ANEXT,
    S_APREV,
    S_DEAD,
    S_INST,
    S_INUSE,
    S_NEXT,
    S_PAGES,
    S_PREV,
    S_STATE,
    SL_CPU_ACTIVE,
    SL_CPU_PARTIAL,
    SL_FREE,
    SL_FULL,
    SL_NODE_PARTIAL,
    Model,
)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _pages_changed(m: Model, inst: int, dpages: int, dempty: int) -> None:
    m.inst[I_NR_PAGES, inst] += dpages
    m.inst[I_EMPTY_PAGES, inst] += dempty
    if m.inst[I_STATE, inst] == IS_DEAD:
        m.ctr[C_DEAD_PAGES] += dpages
        m.ctr[C_DEAD_EMPTY_PAGES] += dempty
        m.ctr[C_DEAD_CHANGED] = 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def set_inuse(m: Model, s: int, delta: int) -> None:
    """Change a slab's object count, keeping the empty-slab and stranded totals right."""
    before = m.slab[S_INUSE, s]
    after = before + delta
    m.slab[S_INUSE, s] = after
    dead = m.slab[S_DEAD, s]
    # A slab's stranded share changes only when it turns wholly dead or stops being so
    # (``inuse`` meets ``dead``; an empty slab has ``dead == 0``); between, a mixed slab's
    # dead bytes stay. In shared (objcg) caches most slabs hold some dead object.
    whole_before = dead == before
    whole_after = dead == after
    if dead > 0 and (whole_before or whole_after):
        strand(m, s, before, dead, -1)
        strand(m, s, after, dead, 1)
    if before == 0 and after > 0:
        _pages_changed(m, known_index(m.slab[S_INST, s]), 0, -m.slab[S_PAGES, s])
    elif before > 0 and after == 0:
        _pages_changed(m, known_index(m.slab[S_INST, s]), 0, m.slab[S_PAGES, s])


@njit(cache=True, nogil=True, _nrt=False)
def new_slab(m: Model, inst: int) -> int:
    """``new_slab()``: pages from the page allocator for a fresh, empty slab."""
    s = m.ctr[C_SLAB_FREE_HEAD]
    if s >= 0:
        m.ctr[C_SLAB_FREE_HEAD] = m.slab[S_NEXT, s]
    else:
        s = m.ctr[C_SLAB_HWM]
        m.ctr[C_SLAB_HWM] += 1
    cache = m.inst[I_CACHE, inst]
    pages = m.geom[G_PAGES, cache]
    m.slab[S_INST, s] = inst
    m.slab[S_INUSE, s] = 0
    m.slab[S_STATE, s] = SL_FULL
    m.slab[S_NEXT, s] = -1
    m.slab[S_PREV, s] = -1
    m.slab[S_PAGES, s] = pages
    m.slab[S_DEAD, s] = 0
    _all_link(m, inst, s)
    m.inst[I_NR_SLABS, inst] += 1
    _pages_changed(m, inst, pages, pages)
    charge_slab(m, inst, pages)
    m.ctr[C_PAGES_ALLOC] += pages
    m.ctr[C_TOTAL_PAGES] += pages
    return s


@njit(cache=True, nogil=True, _nrt=False)
def _all_link(m: Model, inst: int, s: int) -> None:
    head = m.inst[I_AHEAD, inst]
    m.slab[S_ANEXT, s] = head
    m.slab[S_APREV, s] = -1
    if head >= 0:
        m.slab[S_APREV, head] = s
    m.inst[I_AHEAD, inst] = s


@njit(cache=True, nogil=True, _nrt=False)
def _unlink(m: Model, inst: int, s: int, next_f: int, prev_f: int, head_f: int,
            tail_f: int) -> None:
    # One doubly-linked unlink for both intrusive lists (tail_f < 0: the list has no tail).
    nxt = m.slab[next_f, s]
    prv = m.slab[prev_f, s]
    if prv >= 0:
        m.slab[next_f, prv] = nxt
    else:
        m.inst[head_f, inst] = nxt
    if nxt >= 0:
        m.slab[prev_f, nxt] = prv
    elif tail_f >= 0:
        m.inst[tail_f, inst] = prv


@njit(cache=True, nogil=True, _nrt=False)
def _all_unlink(m: Model, inst: int, s: int) -> None:
    _unlink(m, inst, s, S_ANEXT, S_APREV, I_AHEAD, -1)


@njit(cache=True, nogil=True, _nrt=False)
def discard_slab(m: Model, s: int) -> None:
    """``discard_slab()``: the slab's pages go back to the page allocator."""
    inst = m.slab[S_INST, s]
    pages = m.slab[S_PAGES, s]
    empty = pages if m.slab[S_INUSE, s] == 0 else 0
    _all_unlink(m, inst, s)
    m.inst[I_NR_SLABS, inst] -= 1
    _pages_changed(m, inst, -pages, -empty)
    uncharge_slab(m, inst, pages)
    m.ctr[C_PAGES_FREED] += pages
    m.ctr[C_TOTAL_PAGES] -= pages
    m.slab[S_STATE, s] = SL_FREE
    m.slab[S_NEXT, s] = m.ctr[C_SLAB_FREE_HEAD]
    m.ctr[C_SLAB_FREE_HEAD] = s


@njit(cache=True, nogil=True, _nrt=False)
def move_slab(m: Model, s: int, to_inst: int) -> None:
    """Way #3: hand a slab (and its objects) to another cache instance."""
    inst = m.slab[S_INST, s]
    pages = m.slab[S_PAGES, s]
    empty = pages if m.slab[S_INUSE, s] == 0 else 0
    on_partial = m.slab[S_STATE, s] == SL_NODE_PARTIAL
    if on_partial:
        partial_remove(m, inst, s)
    _all_unlink(m, inst, s)
    m.inst[I_NR_SLABS, inst] -= 1
    _pages_changed(m, inst, -pages, -empty)
    m.slab[S_INST, s] = to_inst
    _all_link(m, to_inst, s)
    m.inst[I_NR_SLABS, to_inst] += 1
    _pages_changed(m, to_inst, pages, empty)
    # The charge goes with the slab (charges are hierarchical): no page-counter traffic.
    if m.inst[I_CHARGE, inst] != 0:
        memcg_pages_changed(m, m.inst[I_CHARGE, inst], -pages)
    if m.inst[I_CHARGE, to_inst] != 0:
        memcg_pages_changed(m, m.inst[I_CHARGE, to_inst], pages)
    if on_partial:
        partial_add(m, to_inst, s, True)


@njit(cache=True, nogil=True, _nrt=False)
def partial_add(m: Model, inst: int, s: int, at_tail: bool) -> None:
    """``add_partial()`` (DEACTIVATE_TO_TAIL / TO_HEAD)."""
    m.slab[S_STATE, s] = SL_NODE_PARTIAL
    head = m.inst[I_PHEAD, inst]
    tail = m.inst[I_PTAIL, inst]
    if head < 0:
        m.slab[S_NEXT, s] = -1
        m.slab[S_PREV, s] = -1
        m.inst[I_PHEAD, inst] = s
        m.inst[I_PTAIL, inst] = s
    elif at_tail:
        m.slab[S_PREV, s] = tail
        m.slab[S_NEXT, s] = -1
        m.slab[S_NEXT, tail] = s
        m.inst[I_PTAIL, inst] = s
    else:
        m.slab[S_NEXT, s] = head
        m.slab[S_PREV, s] = -1
        m.slab[S_PREV, head] = s
        m.inst[I_PHEAD, inst] = s
    m.inst[I_NR_PARTIAL, inst] += 1


@njit(cache=True, nogil=True, _nrt=False)
def partial_remove(m: Model, inst: int, s: int) -> None:
    """``remove_partial()``."""
    _unlink(m, inst, s, S_NEXT, S_PREV, I_PHEAD, I_PTAIL)
    m.inst[I_NR_PARTIAL, inst] -= 1
    m.slab[S_NEXT, s] = -1
    m.slab[S_PREV, s] = -1


@njit(cache=True, nogil=True, _nrt=False)
def may_discard_empty(m: Model, inst: int, era: int) -> bool:
    """The empty-slab test of ``__slab_free``: ``nr_partial >= min_partial`` (v3.14: ``>``)."""
    if era == ERA_3_14:
        return m.inst[I_NR_PARTIAL, inst] > m.inst[I_MIN_PARTIAL, inst]
    return m.inst[I_NR_PARTIAL, inst] >= m.inst[I_MIN_PARTIAL, inst]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def objects_per_slab(m: Model, inst: int) -> int:
    """The cache's objects per slab: every slab of a cache has its geometry (``new_slab``),
    so it is read from the small, always-cached ``geom``, not from the slab's own row."""
    return m.geom[G_OBJS, known_index(m.inst[I_CACHE, inst])]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _push_cpu_partial(m: Model, inst: int, cpu: int, s: int, objs: int, era: int) -> None:
    # The stack's running free-object count (<= v5.15 "pobjects") lives in the head's
    # S_PREV; from v5.16 the budget counts slabs and nothing reads it.
    head = m.pcpu[P_PHEAD, inst, cpu]
    if era <= ERA_5_15:
        below = m.slab[S_PREV, head] if head >= 0 else 0
        m.slab[S_PREV, s] = below + objs - m.slab[S_INUSE, s]
    m.slab[S_NEXT, s] = head
    m.slab[S_STATE, s] = SL_CPU_PARTIAL
    m.pcpu[P_PHEAD, inst, cpu] = s
    m.pcpu[P_PSLABS, inst, cpu] += 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def unfreeze_partials(m: Model, inst: int, cpu: int, era: int) -> None:
    """``unfreeze_partials()``/``__put_partials()``: the CPU's partial stack to the node list."""
    s = m.pcpu[P_PHEAD, inst, cpu]
    if s < 0:
        return
    m.ctr[C_LIST_LOCK] += 1
    while s >= 0:
        nxt = m.slab[S_NEXT, s]
        if m.slab[S_INUSE, s] == 0 and may_discard_empty(m, inst, era):
            discard_slab(m, s)
        else:
            partial_add(m, inst, s, True)
        s = nxt
    m.pcpu[P_PHEAD, inst, cpu] = -1
    m.pcpu[P_PSLABS, inst, cpu] = 0


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def put_cpu_partial(m: Model, inst: int, cpu: int, s: int, era: int, objs: int) -> None:
    """``put_cpu_partial()``: park a slab that just got its first free object."""
    budget = m.inst[I_CPU_PARTIAL, inst]
    head = m.pcpu[P_PHEAD, inst, cpu]
    if head >= 0:
        if era <= ERA_5_15:
            full = m.slab[S_PREV, head] > budget
        else:
            full = m.pcpu[P_PSLABS, inst, cpu] >= budget
        if full:
            unfreeze_partials(m, inst, cpu, era)
    _push_cpu_partial(m, inst, cpu, s, objs, era)
    if budget == 0:
        # Way #1's hook (v4.0-v5.8): dead caches have cpu_partial = 0, drop at once.
        unfreeze_partials(m, inst, cpu, era)


@njit(cache=True, nogil=True, _nrt=False)
def deactivate_slab(m: Model, inst: int, cpu: int, era: int) -> None:
    """``deactivate_slab()``: the CPU gives its active slab back (flush or switch)."""
    s = m.pcpu[P_ACTIVE, inst, cpu]
    if s < 0:
        return
    m.pcpu[P_ACTIVE, inst, cpu] = -1
    if m.slab[S_INUSE, s] == 0 and may_discard_empty(m, inst, era):
        discard_slab(m, s)
    elif m.slab[S_INUSE, s] < objects_per_slab(m, inst):
        m.ctr[C_LIST_LOCK] += 1
        partial_add(m, inst, s, False)
    else:
        m.slab[S_STATE, s] = SL_FULL


@njit(cache=True, nogil=True, _nrt=False)
def flush_all(m: Model, inst: int, era: int) -> None:
    """``flush_all()``: every CPU holding a slab of this cache is interrupted and drains."""
    ncpu = m.pcpu.shape[2]
    m.ctr[C_FLUSH] += 1
    for cpu in range(ncpu):
        if m.pcpu[P_ACTIVE, inst, cpu] >= 0 or m.pcpu[P_PHEAD, inst, cpu] >= 0:
            m.ctr[C_IPI] += 1
            deactivate_slab(m, inst, cpu, era)
            unfreeze_partials(m, inst, cpu, era)


@njit(cache=True, nogil=True, _nrt=False)
def shrink(m: Model, inst: int, era: int) -> None:
    """``__kmem_cache_shrink()``: flush, then discard every empty node-partial slab."""
    flush_all(m, inst, era)
    m.ctr[C_LIST_LOCK] += 1
    s = m.inst[I_PHEAD, inst]
    while s >= 0:
        nxt = m.slab[S_NEXT, s]
        if m.slab[S_INUSE, s] == 0:
            partial_remove(m, inst, s)
            discard_slab(m, s)
        s = nxt


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def alloc_object(m: Model, inst: int, objs: int, cpu: int, era: int, track_full: bool) -> int:
    """``slab_alloc()``/``___slab_alloc()``: take one object, return its slab. ``objs`` is
    :func:`objects_per_slab` of ``inst``."""
    s = m.pcpu[P_ACTIVE, inst, cpu]
    if s >= 0 and m.slab[S_INUSE, s] < objs:
        set_inuse(m, s, 1)
        return s
    if s >= 0:
        # The exhausted active slab leaves the CPU on no list (SLUB does not track full
        # slabs unless debugging; Way #3 must, under the list_lock).
        m.slab[S_STATE, s] = SL_FULL
        m.pcpu[P_ACTIVE, inst, cpu] = -1
        if track_full:
            m.ctr[C_LIST_LOCK] += 1
    s = m.pcpu[P_PHEAD, inst, cpu]
    if s >= 0:
        m.pcpu[P_PHEAD, inst, cpu] = m.slab[S_NEXT, s]
        m.pcpu[P_PSLABS, inst, cpu] -= 1
    elif m.inst[I_NR_PARTIAL, inst] > 0:
        s = _get_partial_node(m, inst, objs, cpu, era)
    else:
        s = new_slab(m, inst)
    s = known_index(s)
    m.slab[S_STATE, s] = SL_CPU_ACTIVE
    m.slab[S_NEXT, s] = -1
    m.pcpu[P_ACTIVE, inst, cpu] = s
    set_inuse(m, s, 1)
    return s


@njit(cache=True, nogil=True, _nrt=False)
def _get_partial_node(m: Model, inst: int, objs: int, cpu: int, era: int) -> int:
    """``get_partial_node()``: first node-partial slab becomes active, more refill the CPU."""
    m.ctr[C_LIST_LOCK] += 1
    first = m.inst[I_PHEAD, inst]
    partial_remove(m, inst, first)
    budget = m.inst[I_CPU_PARTIAL, inst]
    available = objs - m.slab[S_INUSE, first]
    moved = 0
    while budget > 0 and m.inst[I_PHEAD, inst] >= 0:
        if era <= ERA_5_15:
            if available > budget // 2:
                break
        elif moved > budget // 2:
            break
        t = m.inst[I_PHEAD, inst]
        partial_remove(m, inst, t)
        _push_cpu_partial(m, inst, cpu, t, objs, era)
        available += objs - m.slab[S_INUSE, t]
        moved += 1
    return first


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def free_object(m: Model, s: int, inst: int, objs: int, cpu: int, era: int,
                track_full: bool) -> None:
    """``do_slab_free()``/``__slab_free()``: return one object to slab ``s`` of cache
    instance ``inst``, whose slabs hold ``objs`` objects."""
    was_full = m.slab[S_INUSE, s] == objs
    set_inuse(m, s, -1)
    state = m.slab[S_STATE, s]
    if state == SL_CPU_ACTIVE:
        return  # any CPU's active slab: lock-free
    if state == SL_CPU_PARTIAL and era < ERA_6_8:
        return  # frozen: lock-free
    if was_full and state == SL_FULL:
        if track_full:
            m.ctr[C_LIST_LOCK] += 1  # off n->full
        put_cpu_partial(m, inst, cpu, s, era, objs)
        return
    if m.slab[S_INUSE, s] != 0:
        return  # the common case: no list change
    m.ctr[C_LIST_LOCK] += 1
    if state == SL_CPU_PARTIAL:
        return  # v6.8+: an unfrozen CPU partial slab stays parked, even empty
    if may_discard_empty(m, inst, era):
        partial_remove(m, inst, s)
        discard_slab(m, s)
