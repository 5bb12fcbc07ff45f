"""SLUB behaviour by kernel era, and the per-cache geometry the model runs with.

The rules that decide whether a dead cache's last empty slabs are ever released changed
over time (research/kernel-strategies.md §3); the replay takes the era as a parameter so
that every strategy is compared on the same allocator. Object size, objects per slab and
order come from the trace (the recording kernel's /sys/kernel/slab); the per-CPU partial
budget is recomputed for the chosen era from ``s->size`` unless the trace recorded a tuned
``cpu_partial`` (one that is neither era's default, e.g. ``0`` on a tuned host), which is
then honoured and converted objects -> slabs as the era's kernel does.
"""

from dataclasses import dataclass

import numpy as np

from kmemtrace.errors import UsageError
from kmemtrace.model.state import (
    G_CPU_PARTIAL,
    G_MIN_PARTIAL,
    G_OBJS,
    G_PAGES,
    G_SHRINK_AT_SAMPLE,
    G_SIZE,
    NG,
)

ERA_3_14 = 0
ERA_5_15 = 1
ERA_5_16 = 2
ERA_6_8 = 3


@dataclass(frozen=True)
class Era:
    name: str
    code: int
    summary: str


ERAS = {
    e.name: e
    for e in (
        Era("3.14", ERA_3_14, "discard test nr_partial > min_partial; CPU partial budget in "
            "objects (2/6/13/30); frozen CPU partial slabs"),
        Era("5.15", ERA_5_15, "nr_partial >= min_partial; CPU partial budget in objects "
            "(2/6/13/30); frozen CPU partial slabs"),
        Era("5.16", ERA_5_16, "CPU partial budget in slabs, DIV_ROUND_UP(2 * 6/24/52/120 "
            "objects, objs_per_slab) (b47291ef02b0, 23e98ad1ce89); frozen CPU partial slabs"),
        Era("6.8", ERA_6_8, "as 5.16, but CPU partial slabs are not frozen: a free that "
            "empties one leaves it parked on the CPU"),
    )
}
DEFAULT_ERA = "5.16"


def get_era(name: str) -> Era:
    try:
        return ERAS[name]
    except KeyError:
        raise UsageError(f"unknown SLUB era {name!r} (eras: {', '.join(ERAS)})") from None


def _default_objects(size: int, old: bool) -> int:
    """``set_cpu_partial()``'s object count: v3.x-v5.15, or v5.16+ (b47291ef02b0)."""
    if old:
        return 2 if size >= 4096 else 6 if size >= 1024 else 13 if size >= 256 else 30
    return 6 if size >= 4096 else 24 if size >= 1024 else 52 if size >= 256 else 120


def is_tuned(size: int, recorded: int | None) -> bool:
    """A recorded ``cpu_partial`` that no kernel sets by default: an administrator's."""
    return recorded is not None and int(recorded) not in (_default_objects(size, True),
                                                          _default_objects(size, False))


def cpu_partial_budget(size: int, objs_per_slab: int, era: Era,
                       recorded: int | None = None) -> int:
    """The era's budget: objects (<= v5.15) or slabs (>= v5.16,
    ``slub_set_cpu_partial``: ``DIV_ROUND_UP(nr_objects * 2, objs_per_slab)``)."""
    nr_objects = (int(recorded) if is_tuned(size, recorded)
                  else _default_objects(size, era.code <= ERA_5_15))
    if era.code <= ERA_5_15:
        return nr_objects
    return cpu_partial_slabs(nr_objects, objs_per_slab)


def cpu_partial_slabs(nr_objects: int, objs_per_slab: int) -> int:
    """v5.16+ ``slub_set_cpu_partial``: a ``cpu_partial`` of objects as a count of slabs,
    ``DIV_ROUND_UP(nr_objects * 2, objs_per_slab)`` (half-full slabs assumed)."""
    return -(-nr_objects * 2 // max(objs_per_slab, 1))


def min_partial_for(size: int) -> int:
    """``clamp(ilog2(size) / 2, MIN_PARTIAL=5, MAX_PARTIAL=10)``, unchanged since v3.x."""
    return min(max((max(int(size), 1).bit_length() - 1) // 2, 5), 10)


def geometry(caches: list[dict], era: Era) -> np.ndarray:
    """``geom[field, cache]`` for the model from the trace's cache table."""
    geom = np.zeros((NG, max(len(caches), 1)), dtype=np.int64)
    for c in caches:
        i = c["id"]
        size = int(c.get("size") or c.get("object_size") or 64)
        objs = int(c.get("objs_per_slab") or max(4096 // size, 1))
        order = int(c.get("order") or 0)
        geom[G_OBJS, i] = objs
        geom[G_PAGES, i] = 1 << order
        geom[G_SIZE, i] = size
        recorded = c.get("min_partial")
        geom[G_MIN_PARTIAL, i] = int(recorded) if recorded is not None else min_partial_for(size)
        geom[G_CPU_PARTIAL, i] = cpu_partial_budget(size, objs, era, c.get("cpu_partial"))
        geom[G_SHRINK_AT_SAMPLE, i] = bool(c.get("shrunk_at_start"))
    return geom
