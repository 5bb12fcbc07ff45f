"""``sizeof`` of the structs a dead memcg keeps alive, from the running kernel's BTF.

Stored in ``meta["kernel"]["struct_sizes"]`` so that a replay prices the metadata of dead
caches, dying memcgs and objcgs for the kernel that was recorded (``model/metadata.py``).
A struct the kernel does not have (``obj_cgroup`` before v5.9, ``memcg_vmstats`` before
it was split out) is left out, and the replay uses its documented default.

``kmem_cache`` is what one allocation of it takes, not ``sizeof``: ``struct kmem_cache``
ends in ``node[MAX_NUMNODES]`` (8 KiB with NODES_SHIFT=10), but ``kmem_cache_init`` sizes
its cache ``offsetof(struct kmem_cache, node) + nr_node_ids * sizeof(ptr)``; with one node
that equals ``/sys/kernel/slab/kmem_cache/object_size``.
"""

from kmemtrace.model.metadata import POINTER_BYTES, STRUCTS
from kmemtrace.record.btf import STRUCT, Btf


def read_struct_sizes(btf: Btf | None) -> dict[str, int]:
    if btf is None:
        return {}
    out = {}
    for name in STRUCTS:
        tid = btf.find(STRUCT, name)
        if tid is not None:
            out[name] = btf.size_of(tid)
    if "kmem_cache" in out and btf.has_member("kmem_cache", "node"):
        out["kmem_cache"] = btf.offset("kmem_cache", "node") + POINTER_BYTES
    return out
