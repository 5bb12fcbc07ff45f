"""``way1``: dead caches keep no free slabs (RFC Way #1).

At offline a dead cache gets ``cpu_partial = min_partial = 0`` (after a grace period, so
every CPU's ``put_cpu_partial`` sees it) and is shrunk. From then on every free that
un-fills a slab takes the node list lock at once, and every slab that empties is freed at
once, so the last free frees the last page and the cache is destroyed after a grace period
(Davydov's "wait for kfree's to finish"). Cost: slower frees into dead caches.
(Seed RFC Way #1; June 2014 series; v4.0 ``d6e0b7fa1186``; research §2.5, §4.4 S1a.)
"""

from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way1(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_DEACTIVATE_DEAD] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        pol[P.PO_DESTROY_NO_PAGES] = P.DESTROY_AFTER_GP


STRATEGY = Way1(
    name="way1",
    title="Way #1: dead caches keep no free slabs; destroy after the last page",
    kernel="RFC Way #1; merged for SLUB in v4.0 (d6e0b7fa1186)",
)
