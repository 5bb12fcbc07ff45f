"""SLUB geometry of the caches synthetic workloads allocate from.

Values were read once from ``/sys/kernel/slab/<name>/{object_size,slab_size,objs_per_slab,
order,min_partial,cpu_partial}`` on the development host (Linux 6.18.44, x86-64, 2 CPUs,
PAGE_SIZE 4096) on 2026-11-25, and hard-coded so that synthetic traces and the tests do not
depend on whatever kernel runs them. ``cpu_partial`` is the ≥ v5.16 value (an object budget
that the kernel turns into ``cpu_partial_slabs``), see research/kernel-strategies.md §3.1.

``signal_cache`` is a merged cache: on that host ``UNIX`` and ``UNIX-STREAM`` are symlinks
to the same ``:A-0001152`` directory, so UNIX sockets are charged to it. It is here so that
reports have a merged alias to name honestly.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class CacheGeometry:
    """One kmem cache as ``/sys/kernel/slab`` describes it."""

    name: str
    object_size: int  # bytes the caller asked for
    size: int  # s->size: object plus metadata and alignment (sysfs slab_size)
    objs_per_slab: int
    order: int  # slab = PAGE_SIZE << order
    min_partial: int
    cpu_partial: int
    aliases: tuple[str, ...] = ()

    def to_meta(self, cache_id: int) -> dict:
        """The ``meta["caches"]`` entry for this cache under ``cache_id``."""
        return {
            "id": cache_id,
            "name": self.name,
            "object_size": self.object_size,
            "size": self.size,
            "objs_per_slab": self.objs_per_slab,
            "order": self.order,
            "min_partial": self.min_partial,
            "cpu_partial": self.cpu_partial,
            "aliases": list(self.aliases),
            "accounted": True,
        }


# The position in this tuple is the cache_id every synthetic trace uses.
CACHES: tuple[CacheGeometry, ...] = (
    CacheGeometry("dentry", 192, 192, 21, 0, 5, 120),
    CacheGeometry("inode_cache", 616, 624, 13, 1, 5, 52),
    CacheGeometry("shmem_inode_cache", 744, 752, 21, 2, 5, 52),
    CacheGeometry("filp", 184, 192, 21, 0, 5, 120),
    CacheGeometry("sock_inode_cache", 768, 832, 19, 2, 5, 52),
    CacheGeometry("kmalloc-cg-64", 64, 64, 64, 0, 5, 120),
    CacheGeometry("kmalloc-cg-192", 192, 192, 21, 0, 5, 120),
    CacheGeometry("kmalloc-cg-512", 512, 512, 16, 1, 5, 52),
    CacheGeometry("radix_tree_node", 576, 584, 14, 1, 5, 52),
    CacheGeometry("signal_cache", 1152, 1152, 14, 2, 5, 24, aliases=("UNIX", "UNIX-STREAM")),
)

CACHE_ID = {c.name: i for i, c in enumerate(CACHES)}

# Caches whose objects behave like the page cache's metadata: they can outlive the memcg
# that allocated them (a dentry or inode stays cached after the container exits).
PAGE_CACHE_LIKE = ("dentry", "inode_cache", "shmem_inode_cache", "radix_tree_node")
