"""Memcg charging of slab memory, counted the same way for every design.

Why one module: the fair comparison (issue 9) needs the per-memcg designs to pay for their
per-slab charge/uncharge exactly as ``objcg`` pays for its per-object one, through the same
per-CPU page stock. The kernel functions mirrored are named in each docstring:

* v3.14 ``memcg_charge_kmem()``: ``res_counter_charge(&memcg->kmem)`` plus
  ``__mem_cgroup_try_charge()``, whose per-CPU stock serves single pages only
  (``consume_stock`` before v3.19 takes one page); ``memcg_params->nr_pages`` is an atomic.
  Uncharge: ``res_counter_uncharge`` of ``res`` and ``kmem`` plus the ``nr_pages`` atomic.
* v4.x-v6.x ``try_charge_memcg()``: ``consume_stock(memcg, nr_pages)``; on a miss one
  ``page_counter_try_charge`` of ``MEMCG_CHARGE_BATCH`` pages (32; 64 since v6.1,
  1813e51eece0) and the rest refills the stock. Uncharge: ``refill_stock()``, which drains
  the stock (one ``page_counter_uncharge``) when it holds more than a batch or another
  memcg's pages.

Stranded memory (docs/replay.md): per slab, ``S_DEAD`` counts the live objects charged at
allocation to memcgs that are now offline. A slab with ``0 < S_DEAD == inuse`` is held
whole by dead memcgs; with ``0 < S_DEAD < inuse`` it is mixed and only the dead objects'
bytes count. :func:`strand` keeps both totals; every change of ``inuse`` or ``S_DEAD``
removes the slab's old contribution and adds the new one.
"""

from numba import njit

from kmemtrace.model.eras import ERA_3_14, ERA_6_8
from kmemtrace.model.index import known_index
from kmemtrace.model.state import (
    C_ATOMIC,
    C_CUR_CPU,
    C_DEAD_CHANGED,
    C_DYING_MEMCGS,
    C_DYING_PC_MEMCGS,
    C_ERA,
    C_LAST_TS,
    C_MSTOCK_HIT,
    C_MSTOCK_MISS,
    C_PAGE_REF,
    C_PERCPU,
    C_STRANDED_OBJ_BYTES,
    C_STRANDED_SLAB_PAGES,
    G_SIZE,
    I_CACHE,
    I_CHARGE,
    I_MEMCG,
    I_NR_PAGES,
    I_REF_KILLED,
    M_DYING_KIDS,
    M_DYING_KIDS_PC,
    M_PAGES,
    M_PARENT,
    M_PC_PAGES,
    M_STATE,
    M_T_FREE_PC,
    MS_ONLINE,
    S_DEAD,
    S_INST,
    S_INUSE,
    S_PAGES,
    Model,
)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def charge_batch(era: int) -> int:
    """``MEMCG_CHARGE_BATCH`` of the era: 32 pages, 64 since v6.1."""
    return 64 if era >= ERA_6_8 else 32


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def strand(m: Model, s: int, inuse: int, dead: int, sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) slab ``s``'s share of stranded memory."""
    if dead == 0 or inuse == 0:
        return
    m.ctr[C_DEAD_CHANGED] = 1
    if dead == inuse:
        m.ctr[C_STRANDED_SLAB_PAGES] += sign * m.slab[S_PAGES, s]
    else:
        inst = known_index(m.slab[S_INST, s])
        m.ctr[C_STRANDED_OBJ_BYTES] += sign * dead * m.geom[G_SIZE,
                                                           known_index(m.inst[I_CACHE, inst])]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def mark_object_dead(m: Model, s: int, delta: int) -> None:
    """An object of slab ``s`` now belongs to an offline memcg (1) or is gone (-1)."""
    inuse = m.slab[S_INUSE, s]
    dead = m.slab[S_DEAD, s]
    strand(m, s, inuse, dead, -1)
    m.slab[S_DEAD, s] = dead + delta
    strand(m, s, inuse, dead + delta, 1)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def is_dying(m: Model, g: int) -> bool:
    """Offline but not freed: held by charged pages (before v5.3: per-page css refs since
    v3.19) or by a dying child, whose css holds its parent's until its own css_free
    (``init_and_link_css`` / ``css_free_rwork_fn``, every era)."""
    return m.memcg[M_STATE, g] != MS_ONLINE and (
        m.memcg[M_PAGES, g] > 0 or m.memcg[M_DYING_KIDS, g] > 0)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def is_dying_pc(m: Model, g: int) -> bool:
    """:func:`is_dying`, with charged page-cache pages holding it too: a charged folio
    keeps its memcg's css until it is uncharged, and no era up to 6.18 moves LRU folios to
    the parent at offline (docs/replay.md, "Dying memcgs and page cache")."""
    return m.memcg[M_STATE, g] != MS_ONLINE and (
        m.memcg[M_PAGES, g] > 0 or m.memcg[M_PC_PAGES, g] > 0
        or m.memcg[M_DYING_KIDS_PC, g] > 0)


@njit(cache=True, nogil=True, _nrt=False)
def dying_changed(m: Model, g: int, delta: int) -> None:
    """``g`` started (+1) or stopped (-1) dying: count it, and tell its ancestors."""
    m.ctr[C_DEAD_CHANGED] = 1
    while g != 0:
        m.ctr[C_DYING_MEMCGS] += delta
        parent = m.memcg[M_PARENT, g]
        if parent == 0:
            return
        was = is_dying(m, parent)
        m.memcg[M_DYING_KIDS, parent] += delta
        if is_dying(m, parent) == was:
            return
        g = parent


@njit(cache=True, nogil=True, _nrt=False)
def dying_pc_changed(m: Model, g: int, delta: int) -> None:
    """:func:`dying_changed` for the count that includes page cache; a memcg that stops
    dying is stamped with the time (the model's css free, to set beside the kernel's)."""
    m.ctr[C_DEAD_CHANGED] = 1
    while g != 0:
        m.ctr[C_DYING_PC_MEMCGS] += delta
        m.memcg[M_T_FREE_PC, g] = m.ctr[C_LAST_TS] if delta < 0 else 0
        parent = m.memcg[M_PARENT, g]
        if parent == 0:
            return
        was = is_dying_pc(m, parent)
        m.memcg[M_DYING_KIDS_PC, parent] += delta
        if is_dying_pc(m, parent) == was:
            return
        g = parent


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def went_offline(m: Model, g: int) -> None:
    """``g`` was just marked offline: it dies now if anything still holds it."""
    if is_dying(m, g):
        dying_changed(m, g, 1)
    if is_dying_pc(m, g):
        dying_pc_changed(m, g, 1)
    else:
        m.memcg[M_T_FREE_PC, g] = m.ctr[C_LAST_TS]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def memcg_pages_changed(m: Model, g: int, dpages: int) -> None:
    """Pages charged to ``g`` changed, which may start or end its dying."""
    was = is_dying(m, g)
    was_pc = is_dying_pc(m, g)
    m.memcg[M_PAGES, g] += dpages
    now = is_dying(m, g)
    if now != was:
        dying_changed(m, g, 1 if now else -1)
    now_pc = is_dying_pc(m, g)
    if now_pc != was_pc:
        dying_pc_changed(m, g, 1 if now_pc else -1)


@njit(cache=True, nogil=True, _nrt=False)
def page_cache_changed(m: Model, g: int, dpages: int) -> None:
    """A folio of ``dpages`` pages entered (> 0) or left (< 0) the page cache charged to
    ``g``: the same for every strategy, and only the count with page cache sees it."""
    if g == 0:
        return
    was = is_dying_pc(m, g)
    m.memcg[M_PC_PAGES, g] += dpages
    now = is_dying_pc(m, g)
    if now != was:
        dying_pc_changed(m, g, 1 if now else -1)


@njit(cache=True, nogil=True, _nrt=False)
def recharge(m: Model, inst: int, to_memcg: int) -> None:
    """v5.3 ``memcg_deactivate_kmem_caches(memcg, parent)``: the cache (and the charge of
    its pages) now points at ``to_memcg``; the old memcg no longer waits for it."""
    pages = m.inst[I_NR_PAGES, inst]
    g = m.inst[I_CHARGE, inst]
    if g != 0:
        memcg_pages_changed(m, g, -pages)
    if to_memcg != 0:
        memcg_pages_changed(m, to_memcg, pages)
    m.inst[I_CHARGE, inst] = to_memcg


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _drain_stock(m: Model, cpu: int) -> None:
    if m.mstock[0, cpu] >= 0 and m.mstock[1, cpu] > 0:
        m.ctr[C_ATOMIC] += 1  # page_counter_uncharge of the stocked pages
    m.mstock[0, cpu] = -1
    m.mstock[1, cpu] = 0


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def refill_stock(m: Model, memcg: int, pages: int) -> None:
    """``refill_stock()``: give ``pages`` back through the CPU's memcg stock."""
    cpu = known_index(m.ctr[C_CUR_CPU])
    if m.mstock[0, cpu] != memcg:
        _drain_stock(m, cpu)
        m.mstock[0, cpu] = memcg
    m.mstock[1, cpu] += pages
    if m.mstock[1, cpu] > charge_batch(m.ctr[C_ERA]):
        _drain_stock(m, cpu)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def try_charge(m: Model, memcg: int, pages: int) -> None:
    """``try_charge_memcg()``: the CPU's stock, else one page-counter charge of a batch."""
    cpu = known_index(m.ctr[C_CUR_CPU])
    era = m.ctr[C_ERA]
    stock_ok = pages == 1 or era != ERA_3_14
    if stock_ok and m.mstock[0, cpu] == memcg and m.mstock[1, cpu] >= pages:
        m.mstock[1, cpu] -= pages
        m.ctr[C_MSTOCK_HIT] += 1
        return
    m.ctr[C_MSTOCK_MISS] += 1
    m.ctr[C_ATOMIC] += 1  # page_counter_try_charge
    batch = charge_batch(era)
    if stock_ok and batch > pages:
        refill_stock(m, memcg, batch - pages)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _page_ref(m: Model, inst: int) -> None:
    """v5.3 ``percpu_ref_get_many``/``put_many(&s->memcg_params.refcnt, 1 << order)`` per
    slab: a per-CPU op, an atomic once the ref was killed at offline."""
    if m.ctr[C_PAGE_REF] and m.inst[I_MEMCG, inst] != 0:
        m.ctr[C_ATOMIC if m.inst[I_REF_KILLED, inst] else C_PERCPU] += 1


@njit(cache=True, nogil=True, _nrt=False)
def charge_slab(m: Model, inst: int, pages: int) -> None:
    """A new slab of a per-memcg cache is charged to the memcg the cache points at."""
    _page_ref(m, inst)
    g = m.inst[I_CHARGE, inst]
    if g == 0:
        return
    memcg_pages_changed(m, g, pages)
    if m.ctr[C_ERA] == ERA_3_14:
        m.ctr[C_ATOMIC] += 2  # res_counter kmem + memcg_params->nr_pages
    try_charge(m, g, pages)


@njit(cache=True, nogil=True, _nrt=False)
def uncharge_slab(m: Model, inst: int, pages: int) -> None:
    """A freed slab of a per-memcg cache is uncharged from the memcg the cache points at."""
    _page_ref(m, inst)
    g = m.inst[I_CHARGE, inst]
    if g == 0:
        return
    memcg_pages_changed(m, g, -pages)
    if m.ctr[C_ERA] == ERA_3_14:
        m.ctr[C_ATOMIC] += 3  # res_counter res + kmem, memcg_params->nr_pages
    else:
        refill_stock(m, g, pages)
