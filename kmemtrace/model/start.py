"""The kernel's start state laid out where the kernel had it: full, node-partial, CPU slabs.

Why not only events: the prelude (``replay/whatif.py``, :func:`kernel_start`) makes the
starting slabs and objects by allocating and freeing at the start time, and SLUB's rules
then decide where each slab goes. A slab that a free empties goes to the freeing CPU's
partial list, and when that list is full it is drained to the node list, where an empty
slab is discarded once ``min_partial`` are there. So an empty slab that the kernel held on
a CPU (a churning cache's, most of its CPU-held slabs) could not be made by events: it was
discarded at once, or, to keep it, the prelude kept survivors on it that no free ever
reached, and they pinned slabs the kernel drained (``bio-184``, ~2x the kernel's slabs).

So the prelude's events run with nothing drained or discarded (:func:`hold_everything`),
and :func:`lay_out` then puts each root cache's starting slabs where the first
``/sys/kernel/slab`` sample says they were: ``slabs - partial - cpu_slabs`` full ones off
every list, ``partial`` on the node list, and ``cpu_slabs`` on the CPUs: each CPU's partial
list as many as that round's ``slabs_cpu_partial`` says (the cache table's
``cpu_partial_start``), one active slab on each CPU of the rest, CPUs with a partial list
first; where the trace does not say (older recorders), round robin. Which CPU's list holds
which slab decides when a list drains: ``bio-184`` in a churn run, +11 % with every CPU
partial slab of the start on CPU 0, -38 % on CPU 1, +111 % shared round robin. From there
SLUB's own rules keep or drain them, as in the kernel.
"""

import numpy as np
from numba import njit

from kmemtrace.model.slub import _push_cpu_partial, objects_per_slab, partial_add
from kmemtrace.model.state import (
    G_CPU_PARTIAL,
    G_MIN_PARTIAL,
    I_AHEAD,
    I_CPU_PARTIAL,
    I_MIN_PARTIAL,
    I_NR_PARTIAL,
    I_NR_SLABS,
    I_PHEAD,
    I_PTAIL,
    P_ACTIVE,
    P_PHEAD,
    P_PSLABS,
    S_ANEXT,
    S_INUSE,
    S_NEXT,
    S_PREV,
    S_STATE,
    SL_CPU_ACTIVE,
    SL_FULL,
    Model,
)

SLAB_ROLE = "slab_role"  # the prelude's columns: the role of each ALLOC row's slab,
SLAB_CPU = "slab_cpu"  # and the CPU that holds it (-1: not known, shared round robin)
ROLE_NONE = -1  # no layout: the first sample did not say what the CPUs hold
ROLE_CPU_PARTIAL = 0
ROLE_ACTIVE = 1
ROLE_NODE = 2
ROLE_FULL = 3
_NEVER = 1 << 62  # a budget no CPU partial list and no node list reaches


def hold_everything(m: Model, caches: list[int]) -> np.ndarray:
    """Make the instances of ``caches`` created from now on keep every slab where a free
    puts it (no CPU partial list drains, no empty slab is discarded); returns what to
    restore. Caches without a layout keep SLUB's rules throughout."""
    saved = m.geom[[G_MIN_PARTIAL, G_CPU_PARTIAL]].copy()
    m.geom[G_MIN_PARTIAL, caches] = _NEVER
    m.geom[G_CPU_PARTIAL, caches] = _NEVER
    return saved


def slab_roles(cache: np.ndarray, role: np.ndarray, cpu: np.ndarray, objs: np.ndarray
               ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """cache -> the role and CPU of each of its prelude slabs in the order they were made,
    from the prelude's ALLOC rows (a cache's rows are consecutive, ``objs`` to a slab)."""
    out = {}
    for c in np.unique(cache[role != ROLE_NONE]):
        rows = np.flatnonzero(cache == c)[::int(objs[c])]
        out[int(c)] = role[rows].astype(np.int64), cpu[rows].astype(np.int64)
    return out


def lay_out_all(m: Model, saved: np.ndarray, roles: dict[int, tuple[np.ndarray, np.ndarray]],
                era: int) -> int:
    """Restore the budgets :func:`hold_everything` lifted and lay out each cache's root
    instance by ``roles``; returns how many caches could not be laid out (their slab count
    differs from the prelude's: they are left as SLUB's rules put them)."""
    m.geom[[G_MIN_PARTIAL, G_CPU_PARTIAL]] = saved
    missed = 0
    for cache, (role, cpu) in roles.items():
        inst = m.inst_of[cache, 0]
        if inst < 0:
            missed += 1
            continue
        m.inst[I_MIN_PARTIAL, inst] = m.geom[G_MIN_PARTIAL, cache]
        m.inst[I_CPU_PARTIAL, inst] = m.geom[G_CPU_PARTIAL, cache]
        missed += not lay_out(m, inst, role, cpu, np.empty(len(role), np.int64), era)
    return missed


@njit(cache=True, nogil=True, _nrt=False)
def lay_out(m: Model, inst: int, role: np.ndarray, cpu: np.ndarray, made: np.ndarray,
            era: int) -> bool:
    """Put instance ``inst``'s slabs, in the order they were made, where ``role`` says, a
    CPU-held one on CPU ``cpu`` (or round robin where -1; ``made``: room for their
    indices). A slab whose objects do not fit its role goes where SLUB would keep such a
    slab: a full one off every list, a partial one on the node list."""
    n = m.inst[I_NR_SLABS, inst]
    if n != len(role):
        return False
    s = m.inst[I_AHEAD, inst]
    k = n - 1
    while s >= 0 and k >= 0:  # the all-slabs list is newest first
        made[k] = s
        k -= 1
        s = m.slab[S_ANEXT, s]
    if k != -1 or s >= 0:
        return False
    ncpu = m.pcpu.shape[2]
    for c in range(ncpu):
        m.pcpu[P_ACTIVE, inst, c] = -1
        m.pcpu[P_PHEAD, inst, c] = -1
        m.pcpu[P_PSLABS, inst, c] = 0
    m.inst[I_PHEAD, inst] = -1
    m.inst[I_PTAIL, inst] = -1
    m.inst[I_NR_PARTIAL, inst] = 0
    objs = objects_per_slab(m, inst)
    active = 0
    parked = 0
    for i in range(n):
        s = made[i]
        r = role[i]
        m.slab[S_NEXT, s] = -1
        m.slab[S_PREV, s] = -1
        full = m.slab[S_INUSE, s] == objs
        on = (cpu[i] if cpu[i] >= 0 else (active if r == ROLE_ACTIVE else parked)) % ncpu
        if r == ROLE_ACTIVE and m.pcpu[P_ACTIVE, inst, on] < 0:
            m.slab[S_STATE, s] = SL_CPU_ACTIVE
            m.pcpu[P_ACTIVE, inst, on] = s
            active += 1
        elif full:
            m.slab[S_STATE, s] = SL_FULL
        elif ROLE_CPU_PARTIAL <= r <= ROLE_ACTIVE:
            _push_cpu_partial(m, inst, on, s, objs, era)
            parked += 1
        else:
            partial_add(m, inst, s, True)
    return True
