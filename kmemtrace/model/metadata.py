"""What a dead memcg keeps alive besides slab pages: structs, sized for the recording kernel.

Why: v5.3 (caches re-pointed, memcg freed) and v5.9 (no per-memcg caches at all) mostly
saved *metadata* - per-memcg ``kmem_cache`` instances with per-CPU and per-node parts and a
sysfs directory, and whole dying ``mem_cgroup``s with per-CPU statistics - not slab pages.
The recorder stores ``sizeof`` of the structs below from the running kernel's BTF in
``meta["kernel"]["struct_sizes"]`` (``record/structsizes.py``); traces without them
(synthetic, older recordings) use :data:`DEFAULT_SIZES`, read from the BTF of Linux 6.18
x86_64 (this project's host kernel, ``/sys/kernel/btf/vmlinux``). One NUMA node is
modelled (see the assumptions), so per-node parts count once.
"""

from dataclasses import dataclass

STRUCTS = (
    "kmem_cache", "kmem_cache_cpu", "kmem_cache_node", "kernfs_node",
    "mem_cgroup", "mem_cgroup_per_node", "memcg_vmstats", "memcg_vmstats_percpu",
    "lruvec_stats", "lruvec_stats_percpu", "obj_cgroup", "percpu_ref_data",
)
DEFAULT_SIZES = {
    # kmem_cache: the allocated size for one node, see record/structsizes.py
    "kmem_cache": 232, "kmem_cache_cpu": 48, "kmem_cache_node": 72, "kernfs_node": 136,
    "mem_cgroup": 2176, "mem_cgroup_per_node": 512, "memcg_vmstats": 1712,
    "memcg_vmstats_percpu": 1216, "lruvec_stats": 792, "lruvec_stats_percpu": 528,
    "obj_cgroup": 48, "percpu_ref_data": 56,
}
DEFAULT_SOURCE = "Linux 6.18 x86_64 BTF (defaults)"
# A SLUB cache's sysfs directory: one kernfs_node for the directory and one per attribute
# file of slab_attrs[] (about 30 without CONFIG_SLUB_DEBUG/CONFIG_SLUB_STATS). An estimate.
SLUB_SYSFS_NODES = 31
PERCPU_REF_COUNTER = 8  # the per-CPU unsigned long of a percpu_ref
POINTER_BYTES = 8  # per node: kmem_cache->node[], mem_cgroup->nodeinfo[]


@dataclass(frozen=True)
class MetadataCosts:
    """Bytes kept alive per dead cache instance, per dying memcg, per objcg."""

    cache: int
    memcg: int
    objcg: int
    source: str


def struct_sizes(meta: dict) -> tuple[dict[str, int], str]:
    """Sizes recorded in the trace where present, defaults for the rest, and the source."""
    recorded = ((meta.get("kernel") or {}).get("struct_sizes") or {})
    sizes = {name: int(recorded.get(name) or DEFAULT_SIZES[name]) for name in STRUCTS}
    if not recorded:
        return sizes, DEFAULT_SOURCE
    release = (meta.get("kernel") or {}).get("release") or "unknown"
    missing = [n for n in STRUCTS if not recorded.get(n)]
    note = f"; defaults for {', '.join(missing)}" if missing else ""
    return sizes, f"BTF of the recording kernel {release}{note}"


def metadata_costs(meta: dict, ncpu: int) -> MetadataCosts:
    """Per-object metadata bytes, scaled with the CPU count of the recording machine."""
    s, source = struct_sizes(meta)
    cache = (s["kmem_cache"] + ncpu * s["kmem_cache_cpu"] + s["kmem_cache_node"]
             + SLUB_SYSFS_NODES * s["kernfs_node"])
    # struct_size(memcg, nodeinfo, nr_node_ids): the flexible nodeinfo[] pointer per node
    memcg = (s["mem_cgroup"] + POINTER_BYTES + s["mem_cgroup_per_node"] + s["memcg_vmstats"]
             + s["lruvec_stats"]
             + ncpu * (s["memcg_vmstats_percpu"] + s["lruvec_stats_percpu"]))
    objcg = s["obj_cgroup"] + s["percpu_ref_data"] + ncpu * PERCPU_REF_COUNTER
    return MetadataCosts(cache=cache, memcg=memcg, objcg=objcg, source=source)
