"""Time integrals of the model's integer quantities (page·ns, byte·ns, memcg·ns), exact.

Why integers: every integrand is a count (pages, bytes, caches, memcgs) and every time a
nanosecond count, so the integral is an integer. Kept as one, it can be taken lazily — an
integrand's interval is closed only when its value changes, not at every event — and still
equal, bit for bit, the sum taken at every event: integer sums do not depend on grouping,
float sums do (by ~1e-16 per step). The float the metrics use is made once, at the end.

Representation, per integral ``k`` (``integ[k, J_*]``, see ``model/state.py``): the sum so
far is ``hi * 2**31 + lo`` with ``0 <= lo < 2**31``, and the integrand has held ``value``
since ``since``, which is not in the sum yet.

Bound (why int64 cannot overflow): ``hi`` holds the sum divided by 2**31, so a sum below
2**94 fits, and :func:`_add_product` never forms an intermediate above the step's own
contribution (below). 2**94 byte·ns is 1 TiB of live objects (2**40 B) held for 2**54 ns,
208 days; page, cache and memcg counts are smaller still. numba marks signed arithmetic
``nsw`` (overflow is undefined, not wrapping), so staying inside int64 is required, not
just tidy.
"""

import numpy as np
from numba import njit

from kmemtrace.model.state import J_HI, J_LO, J_SINCE, J_VALUE, NF

LIMB_BITS = 31
LIMB = 1 << LIMB_BITS
LIMB_MASK = LIMB - 1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _normalise(integ, k: int) -> None:
    lo = integ[k, J_LO]
    integ[k, J_HI] += lo >> LIMB_BITS  # floor division: a negative lo borrows
    integ[k, J_LO] = lo & LIMB_MASK


@njit(cache=True, nogil=True, _nrt=False)
def _add_product_wide(integ, k: int, x: int, dt: int) -> None:
    """``x * dt`` for any ``x`` and ``0 <= dt``, by 31-bit limbs.

    With ``|x| = xh * 2**31 + xl`` and ``dt = dh * 2**31 + dl`` (``xl, dl < 2**31``),
    ``|x| * dt = q * 2**31 + r`` where ``q = xh*dh*2**31 + xh*dl + xl*dh + (xl*dl >> 31)``
    and ``r = xl*dl & (2**31 - 1)``. ``xl*dl < 2**62``; the other terms of ``q`` are
    non-negative and add up to ``q <= |x| * dt / 2**31``, below 2**63 under the module's
    bound, so no partial sum overflows."""
    ax = -x if x < 0 else x
    xh, xl = ax >> LIMB_BITS, ax & LIMB_MASK
    dh, dl = dt >> LIMB_BITS, dt & LIMB_MASK
    low = xl * dl
    q = ((xh * dh) << LIMB_BITS) + xh * dl + xl * dh + (low >> LIMB_BITS)
    r = low & LIMB_MASK
    if x < 0:
        q, r = -q, -r
    integ[k, J_HI] += q
    integ[k, J_LO] += r
    _normalise(integ, k)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _add_product(integ, k: int, x: int, dt: int) -> None:
    """Add ``x * dt`` (``dt >= 0``) to integral ``k``, exactly."""
    if 0 <= x < LIMB and dt < LIMB:
        integ[k, J_LO] += x * dt  # < 2**62: the common step, a few µs of a few GB
        _normalise(integ, k)
    else:
        _add_product_wide(integ, k, x, dt)


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def settle(integ, k: int, x: int, now: int) -> None:
    """Integrand ``k`` is ``x`` from ``now`` on: if that is a change, its old value's
    interval ``[since, now)`` goes into the sum. Called after every change (or more often:
    an unchanged value costs one comparison and changes nothing)."""
    old = integ[k, J_VALUE]
    if x != old:
        _add_product(integ, k, old, now - integ[k, J_SINCE])
        integ[k, J_VALUE] = x
        integ[k, J_SINCE] = now


@njit(cache=True, nogil=True, _nrt=False)
def close_all(integ, now: int) -> None:
    """The trace ends at ``now``: every integrand's open interval goes into its sum."""
    for k in range(integ.shape[0]):
        _add_product(integ, k, integ[k, J_VALUE], now - integ[k, J_SINCE])
        integ[k, J_SINCE] = now


def exact(integ: np.ndarray, k: int) -> int:
    """Integral ``k`` so far (closed intervals only) as a Python integer."""
    return int(integ[k, J_HI]) * LIMB + int(integ[k, J_LO])


def to_floats(integ: np.ndarray, fctr: np.ndarray) -> None:
    """``fctr[k]``: integral ``k`` rounded once to the nearest float."""
    for k in range(NF):
        fctr[k] = float(exact(integ, k))
