"""long-tail: a few memcgs, offlined mid-trace, a handful of objects outliving them for long.

The case where Way #1 and the 3.14 "current" design differ most: almost every object dies
young, but a few survivors per dead memcg keep its cache's slabs pinned for a long time,
some beyond the end of the trace (they are never freed in it).
"""

import numpy as np

from kmemtrace.params import ParamSpec
from kmemtrace.synth.base import COMMON_PARAMS, Synthesis, Workload, check_common, check_range
from kmemtrace.synth.compose import compose
from kmemtrace.synth.population import Lifetimes, MemcgPlan, cache_probabilities, inode_like_ids

PARAMS = (
    ParamSpec("n_memcgs", "count", 4, "memcgs, all under the root"),
    ParamSpec("n_online", "int", 1, "memcgs that stay online to the end"),
    ParamSpec("survivor_fraction", "float", 0.002,
              "page-cache-like objects that outlive their memcg's offline"),
    ParamSpec("survivor_tail", "duration", 20_000_000_000,
              "Pareto minimum of how long survivors outlive the offline"),
    *COMMON_PARAMS,
)

CACHE_MIX = {"dentry": 30, "inode_cache": 10, "radix_tree_node": 10, "filp": 25,
             "kmalloc-cg-64": 15, "kmalloc-cg-192": 10}


def plan(rng: np.random.Generator, params: dict) -> MemcgPlan:
    """All memcgs start in the first 1 %; the offlined ones go between 20 % and 60 %."""
    duration, n = params["duration"], params["n_memcgs"]
    n_online = min(params["n_online"], n)
    mkdir_t = np.sort(rng.random(n)) * 0.01 * duration
    offline_t = np.full(n, np.inf)
    offline_t[n_online:] = (0.2 + 0.4 * rng.random(n - n_online)) * duration
    # Tasks exit up to 1 ms before the rmdir.
    exit_t = np.where(np.isfinite(offline_t),
                      offline_t - np.minimum(1e6, 0.5 * (offline_t - mkdir_t)), duration - 1.0)
    return MemcgPlan(
        ids=inode_like_ids(rng, n),
        parents=np.ones(n, np.uint64),
        levels=np.ones(n, np.int64),
        paths=[f"/long-tail/job-{i}" for i in range(n)],
        mkdir_t=mkdir_t,
        exit_t=exit_t,
        offline_t=offline_t,
        weight=rng.lognormal(0.0, 0.5, size=n),
    )


def generate(rng: np.random.Generator, n_events: int, params: dict) -> Synthesis:
    check_common(params)
    check_range(params, "n_memcgs", 1)
    check_range(params, "n_online", 0)
    check_range(params, "survivor_fraction", 0.0, 1.0)
    check_range(params, "survivor_tail", 1)
    life = Lifetimes(
        young_mean_ns=params["young_lifetime"], medium_fraction=0.05,
        medium_median_ns=100e6, survivor_fraction=params["survivor_fraction"],
        survivor_scale_ns=params["survivor_tail"], survivor_alpha=0.8,
    )
    return compose(rng, n_events, params, plan(rng, params), cache_probabilities(CACHE_MIX),
                   life)


WORKLOAD = Workload(
    name="long-tail",
    summary="a few memcgs offlined mid-trace; rare survivors pin them, some past the end",
    params=PARAMS,
    generate=generate,
)
