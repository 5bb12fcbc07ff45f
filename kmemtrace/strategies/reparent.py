"""``reparent``: the v5.3-v5.8 design (Roman Gushchin, "mm: memcg/slab: reparent memcg
kmem_caches on cgroup removal", fb2f2b0adb98, and the series around it).

Per-memcg caches stay. At offline each of the memcg's caches is deactivated as in Way #1
(``cpu_partial = min_partial = 0``, then after a grace period shrunk and its percpu_ref
killed) and *re-pointed* to the parent memcg: ``memcg_params.memcg = parent``, one css
reference moved, the list spliced to the parent (so a later offline of the parent moves
them again). The memcg itself is then released without waiting for any slab. The dead
cache lives until its percpu_ref - which counts slab *pages*
(``percpu_ref_get_many(1 << order)`` per new slab, ``put_many`` per freed slab) - drops to
zero; the release callback shuts it down from a work item, safely. Hot path: a
``percpu_ref_tryget``/``put`` per allocation into a per-memcg cache and the page ref per
slab (atomic once killed). (Research §2.8, §4.6 S3-cache, §4.7 S4-pages.)
"""

from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Reparent(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_DEACTIVATE_DEAD] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        pol[P.PO_KILL_REF] = 1
        pol[P.PO_REPOINT] = 1
        pol[P.PO_PAGE_REF] = 1
        pol[P.PO_DESTROY_NO_PAGES] = P.DESTROY_BY_REF


STRATEGY = Reparent(
    name="reparent",
    title="5.3-5.8: dead caches deactivated, re-pointed to the parent, freed at last page",
    kernel="v5.3-v5.8 (fb2f2b0adb98, Roman Gushchin)",
)
