"""The replay state: every slab, cache instance, memcg and live object, as numpy arrays.

Why arrays and integer field indices instead of objects: the replay loop is compiled with
numba and must run at millions of events per second, so the model is arrays of integers
(``slab[S_INUSE, s]`` is the ``inuse`` count of slab ``s``). Field indices are module
constants, which numba folds into the compiled code. :class:`Model` bundles the arrays in a
namedtuple so that compiled functions take one argument.

Memory order: the live-object table, far larger than L2 and hit at random, is one row per
object (``hobj[slot, H_*]``), its slab and memcg packed in one word. The other arrays are
field-major; storing them entry-major (Fortran order, the fields of one slab adjacent)
measured no faster: the slabs, instances and memcgs in use fit in L2 (issue 13).

Capacities grow on demand: the compiled loop stops *before* an event that could overflow
an array and tells the driver which one to grow (see ``replay/engine.py``).
"""

from typing import NamedTuple

import numpy as np

from kmemtrace.errors import KmemtraceError

PAGE_SIZE = 4096
PAGE_SHIFT = 12  # PAGE_SIZE == 1 << PAGE_SHIFT: divisions of byte counts known to be >= 0
IN_PAGE_MASK = PAGE_SIZE - 1  # the sub-page part of such a count (offset_in_page)

# --- slab fields: slab[field, slab_index] ------------------------------------------------
S_INST = 0  # owning cache instance
S_INUSE = 1  # allocated objects (of the cache's objects per slab, ``geom[G_OBJS]``)
S_STATE = 2  # one of SL_*
S_NEXT = 3  # next on node partial list, CPU partial stack, or free-slot list
S_PREV = 4  # previous on the node partial list
S_ANEXT = 5  # next in the instance's list of all slabs (walked by reparent/shutdown)
S_APREV = 6
S_PAGES = 7  # 1 << order
S_DEAD = 8  # live objects charged (at allocation) to memcgs that are now offline
NS = 9

SL_FREE = 0  # slot unused (returned to the page allocator)
SL_CPU_ACTIVE = 1  # c->slab of some CPU
SL_CPU_PARTIAL = 2  # on a CPU partial stack (frozen before v6.8)
SL_NODE_PARTIAL = 3  # on the node partial list
SL_FULL = 4  # no free object, on no list

# --- cache instance fields: inst[field, inst_index] --------------------------------------
I_CACHE = 0  # root cache index (meta["caches"])
I_MEMCG = 1  # owning memcg (dense index); 0 = root cache
I_STATE = 2  # IS_*
I_NR_PAGES = 3
I_NR_SLABS = 4
I_LIVE = 5  # live objects
I_NR_PARTIAL = 6
I_PHEAD = 7  # node partial list head / tail
I_PTAIL = 8
I_AHEAD = 9  # all-slabs list head
I_T_OFFLINE = 10
I_T_DESTROY = 11
I_T_LAST_FREE = 12
I_MIN_PARTIAL = 13
I_CPU_PARTIAL = 14  # budget: objects (<= v5.15) or slabs (>= v5.16); 0 disables caching
I_EMPTY_PAGES = 15  # pages in slabs with inuse == 0
I_REF_KILLED = 16  # Way #4: percpu_ref switched to atomic mode
I_CHARGE = 17  # memcg its pages are charged to / the cache points at (reparent re-points)
I_FREE_NEXT = 18  # next slot on the free-slot list (IS_FREE slots only)
I_NEXT = 19  # the instances in creation order (what walks over every cache follow: a
I_PREV = 20  # reused slot must not change the order, the memcg stock's drains depend on it)
NI = 21

IS_ALIVE = 0
IS_DEAD = 1  # memcg offline, cache not yet destroyed
IS_DESTROYED = 2  # destroyed but still holding slabs (an invariant broken: kept to be seen)
IS_FREE = 3  # slot unused: its cache was destroyed (times in ``dlog``) or never made

# --- per-CPU state of an instance: pcpu[field, inst_index, cpu] ---------------------------
P_ACTIVE = 0  # active slab or -1
P_PHEAD = 1  # CPU partial stack head or -1
P_PSLABS = 2  # slabs on the stack (<= v5.15's free-object count lives in the head's S_PREV)
NP = 3

# --- memcg fields: memcg[field, memcg_index]; index 0 is the root ---------------------------
M_PARENT = 0
M_STATE = 1  # MS_*
M_T_OFFLINE = 2
M_LIVE = 3  # live objects charged to it (by allocation-time attribution)
M_OBJCGS = 4  # obj_cgroups it owns (its own + reparented from children)
M_PAGES = 5  # slab pages of cache instances charged to it (what holds it before v5.3)
M_DYING_KIDS = 6  # children that are dying: each holds its parent's css (all eras)
M_PC_PAGES = 7  # page-cache pages charged to it (PAGE_CACHE rows): hold it on every era
M_DYING_KIDS_PC = 8  # M_DYING_KIDS, counting children held by slab or page cache
M_T_FREE_PC = 9  # when nothing held it any more, page cache counted (0: held, or online)
NM = 10

MS_ONLINE = 0
MS_OFFLINE = 1
MS_RELEASED = 2

# --- root cache geometry: geom[field, cache] ----------------------------------------------
G_OBJS = 0
G_PAGES = 1
G_SIZE = 2
G_MIN_PARTIAL = 3
G_CPU_PARTIAL = 4  # in the era's unit (objects or slabs)
# 1 until the cache's first SLAB_SAMPLE row, where the recorder shrank it before reading it
# (record --shrink-at-start): the replay shrinks it there too
G_SHRINK_AT_SAMPLE = 5
NG = 6

# --- integer counters: ctr[C_*] ------------------------------------------------------------
C_ALLOCS = 0
C_FREES = 1
C_UNKNOWN_FREES = 2  # free of a pointer never allocated in the trace
C_IMPLIED_FREES = 3  # alloc of a still-live pointer: its free was not seen
C_PAGES_ALLOC = 4
C_PAGES_FREED = 5
C_TOTAL_PAGES = 6
C_PEAK_TOTAL_PAGES = 7
C_DEAD_PAGES = 8  # pages of dead (offline, undestroyed) cache instances
C_DEAD_EMPTY_PAGES = 9  # ... of which in empty slabs
C_PEAK_DEAD_PAGES = 10
C_PEAK_DEAD_EMPTY_PAGES = 11
C_DEAD_CACHES = 12
C_PEAK_DEAD_CACHES = 13
C_LIVE_OBJS = 14
C_LIVE_BYTES = 15
C_ATOMIC = 16  # atomic RMW on shared counters
C_PERCPU = 17  # percpu counter / percpu_ref ops
C_LIST_LOCK = 18  # n->list_lock acquisitions
C_IPI = 19  # flush_all: CPUs interrupted
C_FLUSH = 20  # flush_all calls
C_RCU_GP = 21  # RCU grace periods waited or queued
C_REAP_SCAN = 22  # reaper work: caches x (CPUs + partial list length)
C_REPARENT_MOVES = 23  # slabs, caches or objcgs moved to a parent
C_UNSAFE_DESTROY = 24  # destroys started from a free path with no GP/ref (2014 race)
C_FREE_AFTER_DESTROY = 25  # invariant: free into a destroyed cache
C_OUT_OF_ORDER = 26  # events with ts_ns below an earlier event's (clamped)
C_LAST_TS = 27
C_NEXT_TICK = 28  # Way #2 reaper: next tick time
C_SLAB_FREE_HEAD = 29  # free-slot list head
C_SLAB_HWM = 30  # slots ever used
C_NINST = 31
C_HASH_COUNT = 32
C_DEAD_FREES = 33  # frees into dead caches (slow-path cost of Way #1)
C_ALLOC_AFTER_OFFLINE = 34  # allocations charged to an offline memcg (redirected to parent)
C_CACHES_CREATED = 35
C_CACHES_DESTROYED = 36
C_STOCK_HIT = 37  # obj_cgroup per-CPU stock hits / misses
C_STOCK_MISS = 38
C_SAMPLE_IDX = 39
C_NEXT_SAMPLE = 40
C_LOST_EVENTS = 41  # LOST events in the trace (recorder drops)
C_DESTROY_NONEMPTY = 42  # invariant: destroy found live objects
C_DEAD_MEMCGS_PINNED = 43  # offline memcgs still charged live objects (objcgs alive)
C_PEAK_DEAD_MEMCGS_PINNED = 44
C_UNKNOWN_CACHE = 45  # ALLOC events whose cache is not in meta (skipped)
C_PEAK_LIVE_OBJS = 46
C_PRESSURE_EVENTS = 47
C_OFFLINES = 48
C_VSAMPLE_IDX = 49  # SLAB_SAMPLE events paired with the model so far
# The fair metrics (docs/replay.md "Definitions"): the same meaning for every strategy.
C_STRANDED_SLAB_PAGES = 50  # pages of slabs whose live objects all belong to offline memcgs
C_STRANDED_OBJ_BYTES = 51  # offline memcgs' object bytes in mixed slabs
C_DYING_MEMCGS = 52  # offline memcgs still held (each era's rule, see M_PAGES / I_CHARGE)
C_PEAK_STRANDED_BYTES = 53  # whole slabs + parked empties of dead caches + mixed share
C_PEAK_STRANDED_SLAB_PAGES = 54  # whole slabs + parked empties of dead caches
C_PEAK_STRANDED_OBJ_BYTES = 55
C_PEAK_WASTE_BYTES = 56
C_PEAK_METADATA_BYTES = 57
C_PEAK_DYING_MEMCGS = 58
C_META_CACHE_BYTES = 59  # per dead cache instance (constants set by the engine)
C_META_MEMCG_BYTES = 60  # per dying memcg
C_META_OBJCG_BYTES = 61  # per obj_cgroup of an offline memcg (objcg strategy only)
C_CUR_CPU = 62  # CPU of the event being replayed (0 for timers and offline work)
C_MSTOCK_HIT = 63  # memcg page-counter stock (consume_stock) hits / misses
C_MSTOCK_MISS = 64
C_CTX_BYPASS = 65  # allocations the era's rule leaves uncharged (interrupt / kthread)
C_ERA = 66  # the SLUB/memcg era code, for code that has no policy vector at hand
C_PAGE_REF = 67  # 1: per-memcg caches count their slab pages in a percpu_ref (v5.3-v5.8)
# 1: a counter behind the offline-memcg peaks (dead caches and pages, stranded, dying,
# pinned, metadata) changed since they were last taken; they are rarely touched, so the
# loop compares them only then (see ``_update_peaks``)
C_DEAD_CHANGED = 68
C_INST_FREE_HEAD = 69  # free cache-instance slot list head, -1 when empty
C_DLOG_LEN = 70  # destroyed caches logged in ``dlog``
C_INST_HEAD = 71  # oldest / newest instance in use (I_NEXT / I_PREV list), -1 when none
C_INST_TAIL = 72
# Dying memcgs counting page cache as well as slab (the era's rule or a charged page-cache
# page holds an offline memcg): the fair C_DYING_MEMCGS is slab-only, this is what the
# kernel's own count is compared with (analyses/which_way/calibrate.py)
C_DYING_PC_MEMCGS = 73
C_PEAK_DYING_PC_MEMCGS = 74
C_PAGE_CACHE_ROWS = 75  # PAGE_CACHE events replayed
NC = 76

# --- live-object table: hobj[slot, H_*] (model/objects.py); one 16-byte row per slot, so a
# lookup, insert or delete touches one cache line and an offline's walk streams half as much --
H_KEY = 0  # the object's pointer, as int64 bits (0: empty slot)
H_VAL = 1  # slab << MEMCG_BITS | memcg charged at allocation
NH = 2
MEMCG_BITS = 24  # memcg indices the table holds: 16 M memcgs (slab indices get 39 bits)
MEMCG_MASK = (1 << MEMCG_BITS) - 1

# --- destroyed cache instances whose slot was reused: dlog[D_*, k] ---------------------------
# Slots of destroyed caches are reused, so memory follows the caches alive, not the
# containers ever seen; what the metrics need of a destroyed cache stays here (16 bytes).
D_T_OFFLINE = 0
D_T_DESTROY = 1
ND = 2

# --- integrals over trace time: fctr[F_*], float, filled from integ[F_*, J_*] at the end ----
# Each integrand is an integer (pages, bytes, caches, memcgs) and each time an integer (ns),
# so the loop keeps every integral exactly as an integer (see ``replay/integrals.py``) and
# only the finished sum becomes a float: a result does not depend on how the sum was grouped.
F_DEAD_PAGE_NS = 0
F_DEAD_EMPTY_PAGE_NS = 1
F_LIVE_BYTES_NS = 2
F_SLAB_BYTES_NS = 3
F_STRANDED_SLAB_PAGE_NS = 4
F_STRANDED_OBJ_BYTES_NS = 5
F_METADATA_BYTES_NS = 6
F_DYING_MEMCG_NS = 7
F_DYING_PC_MEMCG_NS = 8
NF = 9
# integ[F_*, J_*]: the exact integral, hi * 2**31 + lo (0 <= lo < 2**31), plus the integrand's
# value since the time ``J_SINCE`` that is not in the sum yet (F_SLAB_BYTES_NS counts pages)
J_HI = 0
J_LO = 1
J_VALUE = 2
J_SINCE = 3
NJ = 4

# --- time series rows: series[R_*, sample] ---------------------------------------------------
R_DEAD_LIVE_PAGES = 0
R_DEAD_EMPTY_PAGES = 1
R_DEAD_CACHES = 2
R_TOTAL_PAGES = 3
R_LIVE_OBJS = 4
R_STRANDED_BYTES = 5
R_WASTE_BYTES = 6
R_METADATA_BYTES = 7
R_DYING_MEMCGS = 8
R_DYING_PC_MEMCGS = 9
NR = 10
SERIES_NAMES = ("dead_live_pages", "dead_empty_pages", "dead_caches", "total_pages", "live_objects",
                "stranded_bytes", "waste_bytes", "metadata_bytes", "dying_memcgs",
                "page_cache_dying_memcgs")

# --- model validation: vsample[V_*, k] for the k-th SLAB_SAMPLE event ----------------------
V_TS = 0
V_CACHE = 1
V_KERNEL_SLABS = 2  # what /sys/kernel/slab said
V_KERNEL_OBJECTS = 3
V_MODEL_SLABS = 4  # what the model holds for that root cache, all instances
V_MODEL_OBJECTS = 5
NV = 6


class Model(NamedTuple):
    """All replay state. Compiled code reads and writes these arrays in place."""

    slab: np.ndarray  # int64 [NS, slab_cap]
    inst: np.ndarray  # int64 [NI, inst_cap]
    pcpu: np.ndarray  # int64 [NP, inst_cap, ncpu]
    memcg: np.ndarray  # int64 [NM, memcg_cap]
    inst_of: np.ndarray  # int64 [ncache, memcg_cap]: (cache, memcg) -> instance or -1
    geom: np.ndarray  # int64 [NG, ncache]
    hobj: np.ndarray  # int64 [hash_cap, NH]: live objects, one H_* row per slot (0: empty)
    ctr: np.ndarray  # int64 [NC]
    fctr: np.ndarray  # float64 [NF]: the integrals, once the replay finished
    integ: np.ndarray  # int64 [NF, NJ]: the integrals while it runs, exact
    series: np.ndarray  # float64 [NR, n_samples]
    stock: np.ndarray  # int64 [2, ncpu]: obj_cgroup stock (cached memcg, nr_bytes)
    mstock: np.ndarray  # int64 [2, ncpu]: memcg page stock (cached memcg, nr_pages)
    vsample: np.ndarray  # int64 [NV, n_slab_samples]: kernel vs model, per SLAB_SAMPLE
    dlog: np.ndarray  # int64 [ND, dlog_cap]: offline and destroy times of freed instances


def new_model(geom: np.ndarray, ncpu: int, n_samples: int, *, n_slab_samples: int = 0,
              slab_cap: int = 1024,
              inst_cap: int = 256, memcg_cap: int = 64, hash_cap: int = 1 << 16) -> Model:
    """An empty model for ``geom.shape[1]`` root caches on ``ncpu`` CPUs."""
    ncache = geom.shape[1]
    slab = np.zeros((NS, slab_cap), dtype=np.int64)
    inst = np.zeros((NI, inst_cap), dtype=np.int64)
    pcpu = np.full((NP, inst_cap, ncpu), -1, dtype=np.int64)
    pcpu[P_PSLABS:] = 0
    memcg = np.zeros((NM, memcg_cap), dtype=np.int64)
    inst_of = np.full((ncache, memcg_cap), -1, dtype=np.int64)
    ctr = np.zeros(NC, dtype=np.int64)
    ctr[C_SLAB_FREE_HEAD] = -1
    ctr[C_DEAD_CHANGED] = 1
    ctr[C_INST_FREE_HEAD] = -1
    ctr[C_INST_HEAD] = -1
    ctr[C_INST_TAIL] = -1
    stock = np.zeros((2, ncpu), dtype=np.int64)
    stock[0] = -1
    mstock = stock.copy()
    return Model(
        slab=slab, inst=inst, pcpu=pcpu, memcg=memcg, inst_of=inst_of,
        geom=geom.astype(np.int64), hobj=np.zeros((hash_cap, NH), dtype=np.int64),
        ctr=ctr, fctr=np.zeros(NF, dtype=np.float64), integ=np.zeros((NF, NJ), dtype=np.int64),
        series=np.zeros((NR, n_samples), dtype=np.float64), stock=stock, mstock=mstock,
        vsample=np.zeros((NV, n_slab_samples), dtype=np.int64),
        dlog=np.zeros((ND, inst_cap), dtype=np.int64),
    )


def _grow_cols(a: np.ndarray, new_cap: int, fill: int, axis: int) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = new_cap - a.shape[axis]
    return np.concatenate([a, np.full(shape, fill, dtype=a.dtype)], axis=axis)


def grow_slabs(m: Model) -> Model:
    return m._replace(slab=_grow_cols(m.slab, 2 * m.slab.shape[1], 0, 1))


def grow_instances(m: Model) -> Model:
    cap = 2 * m.inst.shape[1]
    pcpu = _grow_cols(m.pcpu, cap, -1, 1)
    pcpu[P_PSLABS:, m.pcpu.shape[1]:] = 0
    return m._replace(inst=_grow_cols(m.inst, cap, 0, 1), pcpu=pcpu)


def grow_dlog(m: Model) -> Model:
    return m._replace(dlog=_grow_cols(m.dlog, 2 * m.dlog.shape[1], 0, 1))


def grow_memcgs(m: Model, needed: int) -> Model:
    if needed > MEMCG_MASK + 1:
        raise KmemtraceError(f"{needed - 1:,} memcgs in one trace: the replay's live-object "
                             f"table holds at most {MEMCG_MASK:,} (MEMCG_BITS in model/state.py)")
    cap = m.memcg.shape[1]
    while cap < needed:
        cap *= 2
    if cap == m.memcg.shape[1]:
        return m
    return m._replace(
        memcg=_grow_cols(m.memcg, cap, 0, 1), inst_of=_grow_cols(m.inst_of, cap, -1, 1)
    )
