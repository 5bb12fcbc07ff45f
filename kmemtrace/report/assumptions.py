"""The model's assumptions, stated once; every report prints this list.

A replay is only as good as what it assumes, so the terminal table, the mailing-list text
and the JSON all carry the same sentences, taken from here.
"""

import re

from kmemtrace.model.eras import get_era

# Per-memcg kmem caches were removed in v5.9 (commit 9855609bde03, "mm: memcg/slab: use a
# single set of kmem_caches for all accounted allocations"); from then on the kernel
# charges objects through obj_cgroup.
_OBJCG_SINCE = (5, 9)
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def recorded_with_objcg(kernel_release: str) -> bool:
    """True for a real recording kernel of v5.9 or later (not 'synthetic', not unknown)."""
    m = _RELEASE.match(kernel_release or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= _OBJCG_SINCE


def assumptions(era: str, kernel_release: str) -> list[str]:
    """Short sentences, in the order a reader needs them."""
    out = [
        "Object lifetimes are exogenous: they are taken from the trace, and no strategy "
        "changes when an object dies.",
        "An object is charged to the allocating task's memcg at allocation time.",
        f"SLUB model era {era}: {get_era(era).summary}.",
        "A single NUMA node.",
        "Object placement is modelled by counts per slab, not by addresses.",
        "Per-memcg caches are created synchronously at the first allocation "
        "(the kernel creates them asynchronously).",
        "Frees of objects allocated before recording began are counted, not guessed.",
        "Destroy latency is measured from memcg offline to cache destroy.",
        "Objects keep the memcg they were charged to at allocation: reparenting moves the "
        "charge, not the object's origin, so stranded memory counts dead memcgs' objects "
        "in any cache instance, shared caches included.",
        "A dying memcg is one held after offline by the era's rule: charged slab pages "
        "before v5.3 (current, way1, way2, way4; way3 moves them to the parent), its "
        "caches in v5.3-v5.8 (reparent re-points them at offline), its obj_cgroups from "
        "v5.9 (re-pointed at offline).",
        "The 'instances' rows count dead per-memcg cache instances, which objcg does not "
        "have: they are no verdict across designs.",
        "Costs are event counts, not time.",
    ]
    if recorded_with_objcg(kernel_release):
        out.append(
            f"The trace comes from Linux {kernel_release}, which itself used obj_cgroup "
            "(5.9+); the per-memcg caches replayed here are simulated."
        )
    return out
