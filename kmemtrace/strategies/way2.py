"""``way2``: reap dead caches periodically or on memory pressure (RFC Way #2).

No hot-path change at all. Offline shrinks each cache once (the v3.16 "simplify
work-flow" behaviour) and destroys it if that empties it. Otherwise a reaper walks every
dead cache each ``period`` (and, with ``pressure=on``, on each PRESSURE event), shrinks
it (``flush_all``: an IPI per CPU holding slabs) and destroys those left empty. Caches
live until the next tick after their last object dies, or forever on an idle machine if
only pressure reaps (Johannes Weiner's objection). (Seed RFC Way #2; research §4.5.)
"""

from kmemtrace.params import ParamSpec
from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way2(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        pol[P.PO_DESTROY_NO_PAGES] = P.DESTROY_NEVER
        pol[P.PO_REAP_PERIOD_NS] = params["period"]
        pol[P.PO_REAP_ON_PRESSURE] = int(params["pressure"])


STRATEGY = Way2(
    name="way2",
    title="Way #2: a reaper shrinks dead caches every period / on pressure",
    kernel="RFC Way #2; Glauber Costa's 2012 60 s reaper; SLAB's cache_reap",
    params=(
        ParamSpec("period", "duration", 2_000_000_000,
                  "reaper tick (0 = only on pressure); 2 s is SLAB's REAPTIMEOUT_AC"),
        ParamSpec("pressure", "bool", False, "also reap on each PRESSURE event"),
    ),
)
