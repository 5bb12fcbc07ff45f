"""Memcg plans and object populations, drawn with numpy in bulk.

Times here are float nanoseconds from the trace start; :mod:`kmemtrace.synth.events` turns
them into integer, strictly increasing timestamps. A population is a set of i.i.d. objects,
which is what lets :func:`fit_population` hit an event count by taking a prefix: any prefix
of i.i.d. draws has the same distribution, only fewer objects.
"""

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from kmemtrace.synth.geometry import CACHE_ID, CACHES, PAGE_CACHE_LIKE

FIRST_MEMCG_ID = 2048  # ids are inode-like; small ones belong to the root's own files
FIRST_PID = 10_000
PIDS_PER_MEMCG = 8


@dataclass
class MemcgPlan:
    """Every memcg a workload creates, in creation order (ids increase with mkdir time)."""

    ids: np.ndarray  # uint64
    parents: np.ndarray  # uint64, 1 = root
    levels: np.ndarray  # int64, 1 = child of the root
    paths: list[str]
    mkdir_t: np.ndarray  # float64 ns
    exit_t: np.ndarray  # last allocation by its tasks (< offline_t)
    offline_t: np.ndarray  # inf = still online at the end
    weight: np.ndarray  # relative allocation rate while alive

    @property
    def n(self) -> int:
        return len(self.ids)

    def to_meta(self) -> list[dict]:
        """meta["memcgs"]: the root plus every planned memcg."""
        out = [{"id": 1, "parent": 0, "path": "/", "level": 0}]
        for i in range(self.n):
            out.append({"id": int(self.ids[i]), "parent": int(self.parents[i]),
                        "path": self.paths[i], "level": int(self.levels[i])})
        return out


def inode_like_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Increasing ids with small random gaps, like cgroupfs inode numbers."""
    return (FIRST_MEMCG_ID + np.cumsum(rng.integers(1, 40, size=n))).astype(np.uint64)


@dataclass
class Population:
    """One row per object; ``free_t`` is inf for objects still live at the trace end."""

    alloc_t: np.ndarray  # float64 ns
    free_t: np.ndarray
    cache: np.ndarray  # int32 index into geometry.CACHES
    memcg: np.ndarray  # int64 index into the MemcgPlan
    alloc_cpu: np.ndarray  # int32
    free_cpu: np.ndarray
    pid: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.alloc_t)

    def head(self, k: int) -> "Population":
        return Population(*(getattr(self, f.name)[:k] for f in fields(self)))

    @staticmethod
    def concat(parts: list["Population"]) -> "Population":
        return Population(*(np.concatenate([getattr(p, f.name) for p in parts])
                            for f in fields(Population)))


@dataclass(frozen=True)
class Lifetimes:
    """How long objects live: most die young, some medium, survivors outlive the memcg."""

    young_mean_ns: float
    medium_fraction: float  # lognormal part (e.g. files kept open for a while)
    medium_median_ns: float
    survivor_fraction: float  # of page-cache-like objects; freed after the memcg's offline
    survivor_scale_ns: float  # Pareto minimum of the time survived after offline
    survivor_alpha: float  # Pareto shape; < 1.5 gives the heavy tail seen on real hosts


def cache_probabilities(weights: dict[str, float]) -> np.ndarray:
    """Allocation share per cache_id from ``{cache name: weight}``."""
    p = np.zeros(len(CACHES))
    for name, w in weights.items():
        p[CACHE_ID[name]] = w
    return p / p.sum()


_PAGE_CACHE_MASK = np.array([c.name in PAGE_CACHE_LIKE for c in CACHES])


def draw_population(
    rng: np.random.Generator,
    plan: MemcgPlan,
    n: int,
    cache_p: np.ndarray,
    life: Lifetimes,
    ncpus: int,
    remote_free: float,
) -> Population:
    """``n`` i.i.d. objects: memcg by rate x alive time, uniform alloc time while alive."""
    alive = plan.exit_t - plan.mkdir_t
    p = plan.weight * alive
    memcg = rng.choice(plan.n, size=n, p=p / p.sum())
    alloc_t = plan.mkdir_t[memcg] + 1.0 + rng.random(n) * (alive[memcg] - 2.0)
    cache = rng.choice(len(CACHES), size=n, p=cache_p).astype(np.int32)

    medium = rng.random(n) < life.medium_fraction
    span = np.where(
        medium,
        life.medium_median_ns * rng.lognormal(0.0, 1.5, size=n),
        rng.exponential(life.young_mean_ns, size=n),
    )
    free_t = alloc_t + 1.0 + span
    offline = plan.offline_t[memcg]
    exit_t = plan.exit_t[memcg]
    # Tasks exit before the rmdir: whatever they still hold is freed between exit and offline.
    offlined = np.isfinite(offline)
    at_exit = exit_t + rng.random(n) * np.where(offlined, offline - exit_t, 0.0)
    free_t = np.where(offlined & (free_t > exit_t), np.maximum(at_exit, alloc_t + 1), free_t)
    survivor = _PAGE_CACHE_MASK[cache] & (rng.random(n) < life.survivor_fraction)
    tail = life.survivor_scale_ns * (1.0 + rng.pareto(life.survivor_alpha, size=n))
    base = np.where(offlined, offline, alloc_t)
    free_t = np.where(survivor, base + tail, free_t)

    alloc_cpu, free_cpu = draw_cpus(rng, n, ncpus, remote_free)
    pid = (FIRST_PID + memcg * PIDS_PER_MEMCG + rng.integers(0, PIDS_PER_MEMCG, size=n))
    return Population(alloc_t, free_t, cache, memcg.astype(np.int64), alloc_cpu, free_cpu,
                      pid.astype(np.int32))


def draw_cpus(rng: np.random.Generator, n: int, ncpus: int, remote_free: float):
    """Alloc CPUs uniform; a ``remote_free`` share of frees land on another CPU."""
    alloc_cpu = rng.integers(0, ncpus, size=n).astype(np.int32)
    if ncpus == 1:
        return alloc_cpu, alloc_cpu.copy()
    remote = rng.random(n) < remote_free
    other = (alloc_cpu + rng.integers(1, ncpus, size=n)) % ncpus
    return alloc_cpu, np.where(remote, other, alloc_cpu).astype(np.int32)


def fit_population(
    target_events: int, end_t: float, draw: Callable[[int], Population]
) -> Population:
    """The shortest prefix of i.i.d. objects whose ALLOC + in-trace FREE events reach target.

    A pilot draw estimates events per object so that one main draw usually suffices.
    """
    pilot = draw(min(4096, max(target_events, 1)))
    per_object = float(np.mean(1 + (pilot.free_t < end_t)))
    parts: list[Population] = []
    have = 0
    while have < target_events:
        need = target_events - have
        chunk = draw(int(need / per_object * 1.02) + 64)
        events = np.cumsum(1 + (chunk.free_t < end_t))
        k = int(np.searchsorted(events, need)) + 1
        parts.append(chunk.head(k))
        have += int(events[min(k, len(events)) - 1])
    return Population.concat(parts)
