"""The decisions a strategy makes, as the compiled engine reads them.

The replay loop is compiled (numba), so a strategy cannot be a Python callback per event.
Instead each strategy states its decisions at the kernel's own decision points: what
happens at memcg offline, whether dead caches keep free slabs, what destroys a dead cache,
whether a reaper runs, and which hot-path counters it touches. The engine acts on them;
strategies never touch the model. The vocabulary follows research/kernel-strategies.md §8.2
(caching policy x destruction trigger x ownership move x refcount granularity).
"""

import numpy as np

# Ownership of allocations.
PO_PER_MEMCG_CACHES = 0  # 1: a cache instance per (root cache, memcg); 0: shared (objcg)
# At memcg offline.
PO_OFFLINE_SHRINK = 1  # kmem_cache_shrink each of the memcg's caches
PO_DEACTIVATE_DEAD = 2  # Way #1: cpu_partial = min_partial = 0 on dead caches (+1 GP)
PO_REPARENT_SLABS = 3  # Way #3: move every slab to the parent's cache, destroy at once
PO_KILL_REF = 4  # Way #3/#4: percpu_ref_kill at offline (+1 GP)
# What destroys a dead cache.
PO_DESTROY_NO_PAGES = 5  # DESTROY_* below: nr_pages reaching 0
PO_DESTROY_LAST_OBJECT = 6  # Way #4: live object count reaching 0 (percpu_ref release)
PO_REAP_PERIOD_NS = 7  # Way #2: reaper tick period, 0 = none
PO_REAP_ON_PRESSURE = 8  # Way #2: reap on PRESSURE events
# Hot-path costs.
PO_OBJECT_REF = 9  # Way #4: percpu_ref get/put per object (atomic once killed)
PO_TRACK_FULL = 10  # Way #3: full slabs on n->full (list_lock) + percpu_ref around frees
PO_OBJCG = 11  # 5.9+: per-object obj_cgroup charge, stock and refcount
# Allocator and clocks.
PO_ERA = 12
PO_SAMPLE_STEP_NS = 13
# Added for issue 9 (appended: indices are positions in the vector).
PO_DESTROY_WITH_MEMCG = 14  # v4.0 Way #1: dead caches destroyed together at css free
PO_SYNC_IPI = 15  # v4.0: deactivation synchronised by kick_all_cpus_sync (IPI all CPUs)
PO_REPOINT = 16  # v5.3: re-point the dead caches (and their charge) to the parent
PO_PAGE_REF = 17  # v5.3: percpu_ref counting the cache's slab pages (+tryget per alloc)
PO_REPARENT_EMPTIES = 18  # Way #3: empty slabs move too; the parent's min_partial rules
NPO = 19

DESTROY_NEVER = 0
DESTROY_FROM_FREE_PATH = 1  # 3.14: queued from inside the free, no grace period (unsafe)
DESTROY_AFTER_GP = 2  # Way #1 as proposed: after the frees in flight drain (1 GP)
DESTROY_BY_REF = 3  # v5.3: the page-counting percpu_ref's release; safe, no extra GP
# A shrink at offline or by the reaper that leaves a dead cache empty always destroys it,
# from process context after a grace period: that is DESTROY_NEVER's only way out.


def new_policy() -> np.ndarray:
    return np.zeros(NPO, dtype=np.int64)
