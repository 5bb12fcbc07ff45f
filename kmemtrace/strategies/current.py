"""``current``: the design at RFC time (v3.14), the baseline.

Per-memcg caches count their pages in ``nr_pages``. At offline the caches are marked dead
and a work item shrinks them; whenever a slab discard later drops ``nr_pages`` to 0 on a
dead cache, destruction is queued *from inside the free path* with no grace period (the
RFC's free-vs-destroy race, counted as an unsafe destroy window). With SLUB the last empty
slabs stay parked on CPU and node partial lists, so ``nr_pages`` rarely reaches 0 and the
dead cache leaks. (Seed RFC, "How it works now"; research §2.1, §4.3.)
"""

from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Current(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        pol[P.PO_DESTROY_NO_PAGES] = P.DESTROY_FROM_FREE_PATH


STRATEGY = Current(
    name="current",
    title="3.14: destroy when nr_pages hits 0 after offline (leaks under SLUB)",
    kernel="v3.14-v3.15 (RFC 'How it works now')",
)
