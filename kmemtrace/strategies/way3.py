"""``way3``: re-parent the dead cache's slabs to the parent memcg's cache (RFC Way #3).

At offline the cache's percpu_ref is killed (a grace period), CPUs are flushed, empty
slabs dropped, and every remaining slab moves to the parent memcg's cache of the same root
(the root cache for top-level memcgs); the dead cache is destroyed at once. Nothing stays
pinned by the dead memcg. The price is paid all the time: SLUB must track full slabs on
``n->full``, so filling and un-filling a slab takes the node list lock, and every free
takes a percpu_ref (Christoph Lameter: "significantly impact the fastpaths").
(Seed RFC Way #3; May 2014 "kmemcg slab reparenting"; research §4.6.)
"""

from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way3(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_KILL_REF] = 1
        pol[P.PO_REPARENT_SLABS] = 1
        pol[P.PO_TRACK_FULL] = 1


STRATEGY = Way3(
    name="way3",
    title="Way #3: move dead caches' slabs to the parent's cache at offline",
    kernel="RFC Way #3; RFC series May 2014 (not merged)",
)
