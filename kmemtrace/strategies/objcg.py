"""``objcg``: the 5.9+ design: shared caches, per-object ``obj_cgroup`` charging.

There are no per-memcg caches: every accounted object lives in the root cache (or
``kmalloc-cg-*``) and carries a pointer to an ``obj_cgroup``. Each allocation charges
``s->size + 8`` bytes through a per-CPU stock and takes an objcg reference; each free
refills the stock and drops it. At offline the memcg's objcgs are re-pointed to the
parent (``memcg_reparent_objcgs``), so a dead memcg pins no slab pages and no cache; what
lingers is the small objcg while its objects live. Davydov's April-2014 "kmem context"
reply, merged six years later. (v5.9 "The new cgroup slab memory controller"; research
§2.9, §4.8.)
"""

from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class ObjCgroup(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 0
        pol[P.PO_OBJCG] = 1


STRATEGY = ObjCgroup(
    name="objcg",
    title="5.9+: shared caches, per-object obj_cgroup reparented at offline",
    kernel="v5.9-today (Roman Gushchin's slab memory controller)",
)
