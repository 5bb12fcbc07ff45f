"""Memcg plans and object populations, drawn with numpy in bulk.

Times here are float nanoseconds from the trace start; :mod:`kmemtrace.synth.events` turns
them into integer, strictly increasing timestamps. A population is a set of i.i.d. objects;
a long trace draws it window by window of allocation time (:func:`draw_window`), so only
one window's objects are ever in memory.
"""

from dataclasses import dataclass

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
    lo, hi = alive_spans(plan)
    p = plan.weight * (hi - lo)
    memcg = rng.choice(plan.n, size=n, p=p / p.sum())
    alloc_t = lo[memcg] + rng.random(n) * (hi - lo)[memcg]
    return objects_at(rng, plan, memcg, alloc_t, cache_p, life, ncpus, remote_free)


def alive_spans(plan: MemcgPlan) -> tuple[np.ndarray, np.ndarray]:
    """When each memcg's tasks allocate: strictly between its mkdir and its tasks' exit."""
    lo = plan.mkdir_t + 1.0
    return lo, np.maximum(plan.exit_t - 1.0, lo)


def window_masses(plan: MemcgPlan, edges: np.ndarray) -> np.ndarray:
    """[window, memcg] expected allocations: rate x the part of its span in the window."""
    lo, hi = alive_spans(plan)
    overlap = (np.minimum(hi[None, :], edges[1:, None])
               - np.maximum(lo[None, :], edges[:-1, None]))
    return plan.weight[None, :] * np.clip(overlap, 0.0, None)


def draw_window(
    rng: np.random.Generator,
    plan: MemcgPlan,
    n: int,
    mass: np.ndarray,
    t0: float,
    t1: float,
    cache_p: np.ndarray,
    life: Lifetimes,
    ncpus: int,
    remote_free: float,
) -> Population:
    """The ``n`` objects allocated in ``[t0, t1)``: memcg by ``mass``, time uniform in
    the part of its span inside the window. Over all windows this is the distribution of
    :func:`draw_population`, a window at a time."""
    lo, hi = alive_spans(plan)
    memcg = rng.choice(plan.n, size=n, p=mass / mass.sum())
    a, b = np.maximum(lo, t0)[memcg], np.minimum(hi, t1)[memcg]
    alloc_t = a + rng.random(n) * (b - a)
    return objects_at(rng, plan, memcg, alloc_t, cache_p, life, ncpus, remote_free)


def objects_at(
    rng: np.random.Generator,
    plan: MemcgPlan,
    memcg: np.ndarray,
    alloc_t: np.ndarray,
    cache_p: np.ndarray,
    life: Lifetimes,
    ncpus: int,
    remote_free: float,
) -> Population:
    """Cache, lifetime, CPUs and pid of objects whose memcg and alloc time are drawn."""
    n = len(memcg)
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
