"""``way4``: count live objects per cache with a percpu_ref; destroy at the last free.

Every allocation takes a reference and every free drops one (percpu ops while the memcg is
online, an atomic on a shared counter once the ref is killed at offline). At offline the
caches are shrunk as in ``current``: the RFC's Way #4 adds a refcount to the 2014 design,
it does not drop its offline shrink. When the count
of a dead cache reaches zero, the release callback shuts the cache down: flush, then free
every slab, all empty by construction, including the ones SLUB had parked. The ref keeps
the cache alive through the last free, so there is no race. With ``drop_empty=on`` dead
caches also stop keeping free slabs (Way #4 + Way #1).
(Seed RFC Way #4; research §4.7.)
"""

from kmemtrace.params import ParamSpec
from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way4(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_KILL_REF] = 1
        pol[P.PO_OBJECT_REF] = 1
        pol[P.PO_DESTROY_LAST_OBJECT] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        if params["drop_empty"]:
            pol[P.PO_DEACTIVATE_DEAD] = 1


STRATEGY = Way4(
    name="way4",
    title="Way #4: per-cache live-object refcount; destroy at the last free",
    kernel="RFC Way #4 (percpu_ref, not merged); page-counting variant: see reparent",
    params=(ParamSpec("drop_empty", "bool", False,
                      "dead caches also keep no free slabs (Way #4 + Way #1)"),),
)
