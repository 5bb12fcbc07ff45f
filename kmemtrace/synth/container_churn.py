"""container-churn: many short-lived containers, each its own memcg, started over time.

The zombie-memcg pattern from production: containers allocate dentries, inodes, files and
sockets; most objects die young, but a fraction of the page-cache-like ones (dentries,
inodes, radix-tree nodes) stay cached after the container's rmdir, with a heavy tail, and
keep its kmem cache (or its slabs) alive. Most containers sit under a long-lived service
memcg (level 2), the rest directly under the root.
"""

import numpy as np

from kmemtrace.params import ParamSpec
from kmemtrace.synth.base import COMMON_PARAMS, Synthesis, Workload, check_common, check_range
from kmemtrace.synth.compose import compose
from kmemtrace.synth.population import Lifetimes, MemcgPlan, cache_probabilities, inode_like_ids

PARAMS = (
    ParamSpec("n_memcgs", "count", 200, "containers (one memcg each) started over the trace"),
    ParamSpec("n_services", "int", 4, "long-lived service memcgs that parent containers"),
    ParamSpec("nested_fraction", "float", 0.7, "containers under a service, not the root"),
    ParamSpec("container_life", "duration", 5_000_000_000, "median container lifetime"),
    ParamSpec("survivor_fraction", "float", 0.05,
              "page-cache-like objects that outlive their container's offline"),
    ParamSpec("survivor_tail", "duration", 2_000_000_000,
              "Pareto minimum of how long survivors outlive the offline"),
    *COMMON_PARAMS,
)

CACHE_MIX = {
    "filp": 25, "dentry": 20, "kmalloc-cg-64": 15, "kmalloc-cg-192": 10, "kmalloc-cg-512": 8,
    "inode_cache": 5, "shmem_inode_cache": 3, "sock_inode_cache": 5, "radix_tree_node": 6,
    "signal_cache": 3,
}
OFFLINE_GAP_MEAN_NS = 20_000_000  # last task exit -> rmdir by the container runtime
SERVICE_WEIGHT = 0.05  # a service's own allocation rate relative to a container's


def plan(rng: np.random.Generator, params: dict) -> MemcgPlan:
    """Services at t≈0, then containers at uniform start times with lognormal lifetimes."""
    duration = params["duration"]
    n_svc, n_ctr = params["n_services"], params["n_memcgs"]
    svc_t = np.sort(rng.random(n_svc)) * 1e6
    start = np.sort(1e6 + rng.random(n_ctr) * 0.9 * duration)
    life = params["container_life"] * rng.lognormal(0.0, 1.0, size=n_ctr)
    gap = 1.0 + rng.exponential(OFFLINE_GAP_MEAN_NS, size=n_ctr)
    ends_in_trace = start + life + gap < duration
    exit_t = np.where(ends_in_trace, start + life, duration - 1.0)
    offline_t = np.where(ends_in_trace, start + life + gap, np.inf)

    ids = inode_like_ids(rng, n_svc + n_ctr)
    svc_ids = ids[:n_svc]
    svc_paths = [f"/system.slice/svc-{i}.service" for i in range(n_svc)]
    nested = (rng.random(n_ctr) < params["nested_fraction"]) if n_svc else np.zeros(n_ctr, bool)
    which = rng.integers(0, max(n_svc, 1), size=n_ctr)
    parents = np.where(nested, svc_ids[which] if n_svc else 1, 1).astype(np.uint64)
    ctr_paths = [f"{svc_paths[w]}/ctr-{i}.scope" if nest else f"/machine.slice/ctr-{i}.scope"
                 for i, (nest, w) in enumerate(zip(nested.tolist(), which.tolist(), strict=True))]
    return MemcgPlan(
        ids=ids,
        parents=np.concatenate([np.ones(n_svc, np.uint64), parents]),
        levels=np.concatenate([np.ones(n_svc, np.int64), np.where(nested, 2, 1)]),
        paths=svc_paths + ctr_paths,
        mkdir_t=np.concatenate([svc_t, start]),
        exit_t=np.concatenate([np.full(n_svc, duration - 1.0), exit_t]),
        offline_t=np.concatenate([np.full(n_svc, np.inf), offline_t]),
        weight=np.concatenate([np.full(n_svc, SERVICE_WEIGHT),
                               rng.lognormal(0.0, 0.5, size=n_ctr)]),
    )


def generate(rng: np.random.Generator, n_events: int, params: dict) -> Synthesis:
    check_common(params)
    check_range(params, "n_memcgs", 1)
    check_range(params, "n_services", 0)
    check_range(params, "nested_fraction", 0.0, 1.0)
    check_range(params, "container_life", 1_000)
    check_range(params, "survivor_fraction", 0.0, 1.0)
    check_range(params, "survivor_tail", 1)
    life = Lifetimes(
        young_mean_ns=params["young_lifetime"], medium_fraction=0.15,
        medium_median_ns=200e6, survivor_fraction=params["survivor_fraction"],
        survivor_scale_ns=params["survivor_tail"], survivor_alpha=1.1,
    )
    return compose(rng, n_events, params, plan(rng, params), cache_probabilities(CACHE_MIX),
                   life)


WORKLOAD = Workload(
    name="container-churn",
    summary="many short-lived container memcgs; some dentries/inodes outlive the rmdir",
    params=PARAMS,
    generate=generate,
)
