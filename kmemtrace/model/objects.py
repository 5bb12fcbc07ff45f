"""Live-object table: pointer -> (slab, memcg), an open-addressing hash in one numpy array.

Why not a dict: the replay loop is compiled, and numba's typed dict is about 2x slower
than linear probing over flat arrays (research/limits.md §C). Deletion uses backward
shifting, so the table never fills with tombstones however long the trace. Memory is
bounded by the number of live objects, not by trace length. Pointer 0 marks an empty slot;
kernel object addresses are never 0.

Layout: one 16-byte row per slot (``hobj[slot, H_*]``, ``model/state.py``): the key, and the
slab and memcg packed in one word. A lookup and what it finds share a cache line (the table
is far larger than the CPU's L2 and its slots are hit at random), and the walk over the
whole table at a memcg's offline (objcg) streams 16 bytes a slot. Keys are the pointer's 64
bits held in an int64 (kernel addresses have the top bit set): mixing uint64 and int64 in
numba arithmetic or comparisons goes through float64, which would merge nearby pointers.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from kmemtrace.model.index import known_index
from kmemtrace.model.state import C_HASH_COUNT, H_KEY, H_VAL, MEMCG_BITS, MEMCG_MASK, NH, Model

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(24)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_key(ptr) -> int:
    """A trace pointer (uint64) as the table's int64 key: the same 64 bits."""
    return np.int64(ptr)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_slab(m: Model, slot: int) -> int:
    return known_index(m.hobj[slot, H_VAL] >> MEMCG_BITS)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_memcg(m: Model, slot: int) -> int:
    return m.hobj[slot, H_VAL] & MEMCG_MASK


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _home(key, mask):
    return known_index(np.int64(((np.uint64(key) * _GOLDEN) >> _SHIFT) & np.uint64(mask)))


@intrinsic
def _prefetch_row(typingctx, table, row):
    """``llvm.prefetch`` (read, high locality) of ``table[row, 0]``: a hint, no effect on
    any value."""
    if not (isinstance(table, types.Array) and table.ndim == 2 and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary,
                                       [args[1], context.get_constant(types.intp, 0)])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(table, row), codegen


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_prefetch(m: Model, key: int) -> None:
    """Start loading ``key``'s home slot: the loop asks a few events ahead, so that the
    table's random access (an L2 miss) overlaps the work of the events in between."""
    _prefetch_row(m.hobj, _home(key, m.hobj.shape[0] - 1))


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_lookup(m: Model, key: int) -> int:
    """Slot holding ``key`` (see :func:`obj_key`), or -1.

    Key 0 is never held: it marks an empty slot, which a lookup of 0 would "find", and
    freeing that slot would let the count drift below the keys held, the table fill and
    probes never end. So every slot found holds a key, and the count stays exact."""
    if key == 0:
        return -1
    h = m.hobj
    mask = known_index(h.shape[0] - 1)
    i = _home(key, mask)
    while True:
        k = h[i, H_KEY]
        if k == key:
            return i
        if k == 0:
            return -1
        i = (i + 1) & mask


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_insert(m: Model, key: int, slab: int, memcg: int) -> None:
    """Insert a key (not 0) known to be absent; the caller keeps the load factor below
    1/2, so the table always has an empty slot and the probe ends."""
    h = m.hobj
    mask = known_index(h.shape[0] - 1)
    i = _home(key, mask)
    while h[i, H_KEY] != 0:
        i = (i + 1) & mask
    h[i, H_KEY] = key
    h[i, H_VAL] = (slab << MEMCG_BITS) | memcg
    m.ctr[C_HASH_COUNT] += 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def obj_delete(m: Model, i: int) -> None:
    """Remove slot ``i`` and shift later entries of its probe run back (no tombstones)."""
    h = m.hobj
    mask = known_index(h.shape[0] - 1)
    j = i
    while True:
        j = (j + 1) & mask
        k = h[j, H_KEY]
        if k == 0:
            break
        home = _home(k, mask)
        # Move j into the hole at i unless j's home lies cyclically in (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            h[i, H_KEY] = k
            h[i, H_VAL] = h[j, H_VAL]
            i = j
    h[i, H_KEY] = 0
    h[i, H_VAL] = 0
    m.ctr[C_HASH_COUNT] -= 1


@njit(cache=True, nogil=True, _nrt=False)
def _rehash(old, new):
    mask = new.shape[0] - 1
    for j in range(old.shape[0]):
        k = old[j, H_KEY]
        if k == 0:
            continue
        i = _home(k, mask)
        while new[i, H_KEY] != 0:
            i = (i + 1) & mask
        for f in range(NH):
            new[i, f] = old[j, f]


def grow_objects(m: Model) -> Model:
    """Double the table and re-insert every live object."""
    table = np.zeros((2 * m.hobj.shape[0], NH), dtype=np.int64)
    _rehash(m.hobj, table)
    return m._replace(hobj=table)
