"""``way1``: dead caches keep no free slabs (RFC Way #1).

At offline a dead cache gets ``cpu_partial = min_partial = 0`` and is shrunk. From then on
every free that un-fills a slab takes the node list lock at once, and every slab that
empties is freed at once, so the cache's last object frees its last page. Cost: slower
frees into dead caches. What then destroys the cache is the ``trigger`` parameter:

* ``page`` (default, the 2014 proposal): the dead cache is destroyed after a grace period
  once its own last page is gone (Davydov's "memcg: wait for kfree's to finish before
  destroying cache"); the deactivation is synchronised with a grace period (v4.7+).
* ``css`` (v4.0-v5.2 as merged, ``d6e0b7fa1186``): dead caches are destroyed together when
  the memcg's css is freed, i.e. after the last page of *all* its caches
  (``mem_cgroup_css_free`` -> ``memcg_destroy_kmem_caches``), and ``__kmem_cache_shrink(s,
  deactivate=true)`` synchronised with ``kick_all_cpus_sync()`` (an IPI to every CPU),
  not a grace period; v4.7 (81ae6d03952c) replaced it with ``synchronize_sched()``.

(Seed RFC Way #1; June 2014 series; research §2.5, §4.4 S1a/S1b.)
"""

from kmemtrace.params import ParamSpec
from kmemtrace.replay import policy as P
from kmemtrace.strategies.base import Strategy


class Way1(Strategy):
    def configure(self, pol, params):
        pol[P.PO_PER_MEMCG_CACHES] = 1
        pol[P.PO_DEACTIVATE_DEAD] = 1
        pol[P.PO_OFFLINE_SHRINK] = 1
        pol[P.PO_DESTROY_NO_PAGES] = P.DESTROY_AFTER_GP
        if params["trigger"] == "css":
            pol[P.PO_DESTROY_WITH_MEMCG] = 1
            pol[P.PO_SYNC_IPI] = 1


STRATEGY = Way1(
    name="way1",
    title="Way #1: dead caches keep no free slabs; destroy after the last page",
    kernel="RFC Way #1 (2014 proposal); trigger=css: v4.0-v5.2 as merged (d6e0b7fa1186)",
    params=(ParamSpec("trigger", "str", "page",
                      "page: destroy after the cache's last page + a GP (2014 RFC); "
                      "css: all dead caches at css free, IPI sync (v4.0)",
                      choices=("page", "css")),),
)
