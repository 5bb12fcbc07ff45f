"""The per-row work of preparing a batch, compiled: memcg ids to dense indices, the charge rule.

Why compiled: with one strategy, the feeding thread (decode + prepare) and the strategy's
loop run side by side on two cores, so the end-to-end rate is the slower of the two; done
with numpy and ``pd.factorize`` the preparation made ~10 temporaries per column and took a
third of the feeding thread's time (0.19 of 0.59 s for 10 M events), one pass here.
"""

import numpy as np
from numba import njit

from kmemtrace.trace.schema import GFP_ACCOUNT, EventKind

_ALLOC = int(EventKind.ALLOC)
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: inode numbers are near-sequential
_SHIFT = np.uint64(32)


@njit(cache=True, nogil=True, inline="always")
def _slot(keys: np.ndarray, vals: np.ndarray, key: np.uint64) -> int:
    """Where ``key`` is in the open-addressing table, or the empty slot it would take."""
    mask = len(keys) - 1
    h = np.int64((key * _HASH) >> _SHIFT) & mask
    while vals[h] >= 0 and keys[h] != key:
        h = (h + 1) & mask
    return h


@njit(cache=True, nogil=True, inline="always")
def _add(keys: np.ndarray, vals: np.ndarray, new_ids: np.ndarray, h: int, key: np.uint64,
         index: int, n_new: int) -> None:
    """Put a key not yet known in its empty slot ``h`` and list it as the ``n_new``-th new id."""
    keys[h] = key
    vals[h] = index
    new_ids[n_new] = key


# The two loops below look a row's id up inline and handle a new id in place. Why not one
# helper returning (index, new ids so far): numba compiled that per-row tuple into a loop
# 8x slower (14.6 against 1.9 ns a row for 2.2 M rows of 75 memcgs), a third of the
# feeding thread's time, which bounds a one-strategy replay end to end.


@njit(cache=True, nogil=True)
def map_ids(ids: np.ndarray, keys: np.ndarray, vals: np.ndarray, out: np.ndarray,
            new_ids: np.ndarray, start: int, next_index: int, room: int) -> tuple[int, int]:
    """``out[i]`` = the dense index of ``ids[i]`` from ``start`` on; an id not in the table
    gets the next index, in order of first appearance, and is listed in ``new_ids``.
    Stops before the ``room + 1``-th new id (the caller grows the table and resumes):
    returns (where it stopped, new ids)."""
    n_new = 0
    for i in range(start, len(ids)):
        key = ids[i]
        h = _slot(keys, vals, key)
        index = vals[h]
        if index < 0:
            if n_new == room:
                return i, n_new
            index = next_index + n_new
            _add(keys, vals, new_ids, h, key, index, n_new)
            n_new += 1
        out[i] = index
    return len(ids), n_new


@njit(cache=True, nogil=True)
def insert_ids(keys: np.ndarray, vals: np.ndarray, ids: np.ndarray, index: np.ndarray) -> None:
    for i in range(len(ids)):
        h = _slot(keys, vals, ids[i])
        keys[h] = ids[i]
        vals[h] = index[i]


@njit(cache=True, nogil=True)
def map_charged(kind: np.ndarray, cache: np.ndarray, gfp: np.ndarray, ctx: np.ndarray,
                accounted_caches: np.ndarray, interrupt: np.ndarray, unknown_ctx: int,
                all_accounted: bool, counts: np.ndarray, ids: np.ndarray, keys: np.ndarray,
                vals: np.ndarray, out: np.ndarray, new_ids: np.ndarray, start: int,
                next_index: int, room: int) -> tuple[int, int]:
    """:func:`map_ids` (its arguments last) and the charge rule in one pass: ``out[i]`` is
    ``ids[i]``'s dense index, or the root (0) for an allocation the era does not charge.

    Why one pass: the feeding thread bounds a one-strategy replay, and two passes (map,
    then rule) read the memcg column twice and cost a second call per batch.
    ``counts`` (int64[3]) accumulates, across resumptions: charged allocations made in
    interrupt context, allocations of unknown context, rows whose cache is neither known
    nor -1. See ``engine.prepare``."""
    n_new = 0
    n_caches = len(accounted_caches)
    bypassed = unknown = bad = 0  # counts' three, in locals: kept in registers
    stop = len(ids)
    for i in range(start, len(ids)):
        key = ids[i]
        h = _slot(keys, vals, key)
        memcg = vals[h]
        if memcg < 0:
            if n_new == room:
                stop = i
                break
            memcg = next_index + n_new
            _add(keys, vals, new_ids, h, key, memcg, n_new)
            n_new += 1
        c = cache[i]
        known = 0 <= c < n_caches
        if not known and c != -1:
            bad += 1
        if kind[i] == _ALLOC:
            x = ctx[i]
            if x == unknown_ctx:
                unknown += 1
            if all_accounted:
                accounted = known
            else:
                accounted = (gfp[i] & GFP_ACCOUNT) != 0 or (known and accounted_caches[c])
            if interrupt[x]:
                if accounted and memcg != 0:
                    bypassed += 1
                memcg = 0
            elif not accounted:
                memcg = 0
        out[i] = memcg
    counts[0] += bypassed
    counts[1] += unknown
    counts[2] += bad
    return stop, n_new
