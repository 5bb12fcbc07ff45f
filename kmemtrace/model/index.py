"""Array indices the compiled code knows are never negative.

numba indexes with Python semantics: a signed index below 0 counts from the end, so every
``a[i]`` with an ``int64`` ``i`` compiles to a compare and a select (``i < 0 ? i + n : i``)
unless LLVM can prove ``i >= 0``. It cannot for a value loaded from an array (a slab's
cache instance, a live object's slab) or masked with a run-time mask, and the replay loop
does some hundred array accesses an event: removing every such select made objcg's
compiled loop ~10 % faster (issue 13, ``docs/replay.md``).

:func:`known_index` clears the sign bit: one ``and`` where the value is born, and the
value is the same for every ``i >= 0``, so it is applied only where the model already
knows that (a slot found, an object's slab, a slab's instance, an instance's cache).
Never on a value that may be a ``-1`` sentinel.
"""

from numba import njit

_NON_NEGATIVE = (1 << 63) - 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def known_index(i: int) -> int:
    """``i`` (already known to be >= 0), in a form the compiler knows is >= 0."""
    return i & _NON_NEGATIVE
