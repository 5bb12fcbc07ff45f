"""``way3``: re-parent the dead cache's slabs to the parent memcg's cache (RFC Way #3).

Which design: the RFC's Way #3 as written - "move all slab pages belonging to a kmem cache
of a dead memcg to its parent memcg's cache. Then we could remove all dead caches
immediately on css offline. Pros: slabs of dead caches could be reused by parent memcg" -
with the costs of Davydov's May 2014 "kmemcg slab reparenting" RFC series (never merged).
At offline the cache's percpu_ref is killed (a grace period), the CPUs are flushed and
*every* slab (CPU slabs included, empty ones too) moves to the parent memcg's cache of the
same root (the root cache for top-level memcgs); the parent's ``min_partial`` then decides,
as ``__slab_free`` does, which empty slabs it keeps. The dead cache is destroyed at once.
``empties=drop`` keeps the earlier reading (shrink the dead cache first, move only slabs
with objects), also defensible: the series shrank before reparenting.

The price is paid all the time: SLUB must track full slabs on ``n->full``, so filling and
un-filling a slab takes the node list lock, and every free takes a percpu_ref (Christoph
Lameter: "significantly impact the fastpaths"). (Seed RFC Way #3; research §4.6.)
"""

from kmemtrace.params import ParamSpec
from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way3(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_KILL_REF] = 1
        pol[P.PO_REPARENT_SLABS] = 1
        pol[P.PO_TRACK_FULL] = 1
        pol[P.PO_REPARENT_EMPTIES] = int(params["empties"] == "parent")


STRATEGY = Way3(
    name="way3",
    title="Way #3: move dead caches' slabs to the parent's cache at offline",
    kernel="RFC Way #3; RFC series May 2014 (not merged)",
    params=(ParamSpec("empties", "str", "parent",
                      "parent: empty slabs move too, the parent's min_partial keeps or "
                      "frees them; drop: shrink the dead cache before moving",
                      choices=("parent", "drop")),),
)
