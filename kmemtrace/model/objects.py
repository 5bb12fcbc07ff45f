"""Live-object table: pointer -> (slab, memcg), an open-addressing hash in numpy arrays.

Why not a dict: the replay loop is compiled, and numba's typed dict is about 2x slower
than linear probing over flat arrays (research/limits.md §C). Deletion uses backward
shifting, so the table never fills with tombstones however long the trace. Memory is
bounded by the number of live objects, not by trace length. Pointer 0 marks an empty slot;
kernel object addresses are never 0.
"""

import numpy as np
from numba import njit

from kmemtrace.model.state import C_HASH_COUNT, Model

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(24)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _home(key, mask):
    return np.int64(((key * _GOLDEN) >> _SHIFT) & np.uint64(mask))


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_lookup(m: Model, key) -> int:
    """Slot holding ``key``, or -1."""
    mask = m.hkeys.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = m.hkeys[i]
        if k == key:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_insert(m: Model, key, slab: int, memcg: int) -> None:
    """Insert a key known to be absent; the caller keeps the load factor below 1/2."""
    mask = m.hkeys.shape[0] - 1
    i = _home(key, mask)
    while m.hkeys[i] != 0:
        i = (i + 1) & mask
    m.hkeys[i] = key
    m.hslab[i] = slab
    m.hmemcg[i] = memcg
    m.ctr[C_HASH_COUNT] += 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_delete(m: Model, i: int) -> None:
    """Remove slot ``i`` and shift later entries of its probe run back (no tombstones)."""
    mask = m.hkeys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = m.hkeys[j]
        if k == 0:
            break
        home = _home(k, mask)
        # Move j into the hole at i unless j's home lies cyclically in (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            m.hkeys[i] = k
            m.hslab[i] = m.hslab[j]
            m.hmemcg[i] = m.hmemcg[j]
            i = j
    m.hkeys[i] = 0
    m.ctr[C_HASH_COUNT] -= 1


@njit(cache=True, nogil=True, _nrt=False)
def _rehash(keys, slabs, memcgs, new_keys, new_slabs, new_memcgs):
    mask = new_keys.shape[0] - 1
    for j in range(keys.shape[0]):
        k = keys[j]
        if k == 0:
            continue
        i = _home(k, mask)
        while new_keys[i] != 0:
            i = (i + 1) & mask
        new_keys[i] = k
        new_slabs[i] = slabs[j]
        new_memcgs[i] = memcgs[j]


def grow_objects(m: Model) -> Model:
    """Double the table and re-insert every live object."""
    cap = 2 * m.hkeys.shape[0]
    keys = np.zeros(cap, dtype=np.uint64)
    slabs = np.zeros(cap, dtype=np.int64)
    memcgs = np.zeros(cap, dtype=np.int64)
    _rehash(m.hkeys, m.hslab, m.hmemcg, keys, slabs, memcgs)
    return m._replace(hkeys=keys, hslab=slabs, hmemcg=memcgs)
