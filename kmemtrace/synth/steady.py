"""steady: long-lived memcgs with steady alloc/free and no offline — the control case.

No memcg dies, so every strategy should behave the same here; a difference in a replay of
this workload is a bug in the strategy or the engine, not a finding.
"""

import numpy as np

from kmemtrace.params import ParamSpec
from kmemtrace.synth.base import COMMON_PARAMS, Synthesis, Workload, check_common, check_range
from kmemtrace.synth.compose import compose
from kmemtrace.synth.population import Lifetimes, MemcgPlan, cache_probabilities, inode_like_ids

PARAMS = (
    ParamSpec("n_memcgs", "count", 8, "long-lived memcgs, all under the root"),
    *COMMON_PARAMS,
)

CACHE_MIX = {"filp": 25, "dentry": 15, "kmalloc-cg-64": 20, "kmalloc-cg-192": 10,
             "kmalloc-cg-512": 10, "sock_inode_cache": 5, "radix_tree_node": 10,
             "signal_cache": 5}


def plan(rng: np.random.Generator, params: dict) -> MemcgPlan:
    """Every memcg exists from the first millisecond to the end."""
    duration, n = params["duration"], params["n_memcgs"]
    return MemcgPlan(
        ids=inode_like_ids(rng, n),
        parents=np.ones(n, np.uint64),
        levels=np.ones(n, np.int64),
        paths=[f"/steady/svc-{i}" for i in range(n)],
        mkdir_t=np.sort(rng.random(n)) * 1e6,
        exit_t=np.full(n, duration - 1.0),
        offline_t=np.full(n, np.inf),
        weight=rng.lognormal(0.0, 0.5, size=n),
    )


def generate(rng: np.random.Generator, n_events: int, params: dict) -> Synthesis:
    check_common(params)
    check_range(params, "n_memcgs", 1)
    life = Lifetimes(
        young_mean_ns=params["young_lifetime"], medium_fraction=0.2,
        medium_median_ns=500e6, survivor_fraction=0.0, survivor_scale_ns=1.0,
        survivor_alpha=1.1,
    )
    return compose(rng, n_events, params, plan(rng, params), cache_probabilities(CACHE_MIX),
                   life)


WORKLOAD = Workload(
    name="steady",
    summary="long-lived memcgs, steady alloc/free, no offline (control case)",
    params=PARAMS,
    generate=generate,
)
