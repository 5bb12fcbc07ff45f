"""The on-disk trace contract: event kinds, columns and the format version.

A trace is a directory holding ``meta.json`` and ``events/part-NNNNN.parquet``. Every part
has exactly the columns of :data:`COLUMNS`, in that order and with those types, so a trace
can be written with pyarrow alone (see ``docs/trace-format.md``).

Event-kind integers are frozen once published: add new kinds at the end, never renumber.
Any change to the columns or to the meaning of a field bumps :data:`FORMAT_VERSION`, with
the reader, writer, docs and fixtures changed in the same commit.
"""

from enum import IntEnum

import numpy as np
import pyarrow as pa

FORMAT_VERSION = 2
# Versions this reader accepts. v1 lacks the ``ctx`` column; the reader fills it with
# EventContext.UNKNOWN so that everything downstream sees one shape.
READABLE_VERSIONS = (1, 2)
TRACE_MAGIC = "kmemtrace-trace"
META_FILE = "meta.json"
EVENTS_DIR = "events"


class EventKind(IntEnum):
    """What happened. Values are on disk: never renumber, only append."""

    ALLOC = 1  # object allocated: ptr, cache_id, memcg_id (charged), bytes (= s->size), gfp
    FREE = 2  # object freed: ptr (cache_id when known, else -1); memcg comes from the ALLOC
    # a cache instance appeared: cache_id, memcg_id (per-memcg eras), ptr = kmem_cache*
    CACHE_CREATE = 3
    CACHE_DESTROY = 4  # kmem_cache_destroy: cache_id, ptr = kmem_cache*
    MEMCG_MKDIR = 5  # memcg created: memcg_id, aux = parent memcg_id, aux2 = level
    MEMCG_OFFLINE = 6  # memcg offlined: memcg_id, aux = OfflineSource
    MEMCG_RELEASE = 7  # memcg/cgroup freed (cgroup:cgroup_release or css free): memcg_id
    ATTACH = 8  # task moved: pid, memcg_id = destination
    # /sys/kernel/slab sample: cache_id, aux = slabs, aux2 = objects; when gfp has
    # SAMPLE_HAS_CPU_FIELDS: bytes = cpu_slabs, pid = partial, ptr = objects_partial
    SLAB_SAMPLE = 9
    LOST = 10  # events dropped in the kernel: cpu, aux = how many, aux2 = LostReason
    PRESSURE = 11  # memory pressure seen (reclaim, kswapd): aux = PressureKind
    # a folio entered (aux > 0) or left (aux < 0) the page cache: memcg_id = the memcg it is
    # charged to, |aux| = its pages, ptr = struct folio *. What holds an offline memcg on 6.x
    # besides slab (docs/trace-format.md)
    PAGE_CACHE = 12


class OfflineSource(IntEnum):
    """Which probe produced a MEMCG_OFFLINE (stored in ``aux``)."""

    CGROUP_RMDIR = 0  # tracepoint cgroup:cgroup_rmdir (this host's fallback)
    KPROBE = 1  # kprobe/fentry on mem_cgroup_css_offline (stock kernels)
    TRACEPOINT = 2  # our own tracepoint from lab/patches (patched kernels)
    SYNTH = 3  # a synthetic workload


class LostReason(IntEnum):
    """Why events were dropped (stored in ``aux2`` of LOST)."""

    RINGBUF_FULL = 0
    LIVE_MAP_FULL = 1
    PERF_LOST = 2
    NESTED = 3  # program skipped while already running on that CPU (recursion_misses)
    WRITER_QUEUE = 4  # drained records dropped because the writer queue stayed full
    WRITE_FAILED = 5  # rows the writer could not put on disk (disk full, I/O error)
    LIFECYCLE_RING = 6  # memcg life-cycle records the kernel could not queue
    LIFECYCLE_MAP = 7  # a life-cycle bookkeeping map (subtree, followed tasks) was full
    # a FREE no probe saw, inferred when its address was allocated again while still live
    FREE_UNSEEN = 8
    PAGE_CACHE = 9  # page-cache records the kernel could not queue (ring or folio map full)


class EventContext(IntEnum):
    """Where the event ran (stored in ``ctx``): decides whether the kernel charged it.

    The kernel does not charge interrupt-context allocations to the interrupted task's
    memcg (``memcg_kmem_bypass`` and its predecessors), so replay needs to know.
    """

    UNKNOWN = 0  # the kernel gave no way to tell (and every v1 trace)
    TASK = 1
    SOFTIRQ = 2  # including RCU callbacks run from softirq
    HARDIRQ = 3
    NMI = 4


class PressureKind(IntEnum):
    """Reclaim signal behind a PRESSURE event (stored in ``aux``)."""

    KSWAPD_WAKE = 0
    DIRECT_RECLAIM = 1
    MEMCG_RECLAIM = 2
    SYNTH = 3
    SHRINK_SLAB = 4  # a shrinker ran (vmscan:mm_shrink_slab_start): reclaim or drop_caches


# Column name -> numpy dtype. Order is the on-disk order.
COLUMNS: dict[str, np.dtype] = {
    "ts_ns": np.dtype(np.int64),  # CLOCK_MONOTONIC, per-CPU monotonic
    "seq": np.dtype(np.int64),  # arrival order in the recorder; ties in ts_ns keep it
    "cpu": np.dtype(np.int32),
    "kind": np.dtype(np.uint8),  # EventKind
    "ptr": np.dtype(np.uint64),  # object (or kmem_cache*) address: identity key only
    "cache_id": np.dtype(np.int32),  # index into meta["caches"], -1 when unknown
    "memcg_id": np.dtype(np.uint64),  # memcg directory inode = cgroup id; 0 unknown, 1 root
    "bytes": np.dtype(np.int32),  # object size as allocated (s->size / bytes_alloc)
    "pid": np.dtype(np.int32),
    "gfp": np.dtype(np.uint32),  # gfp flags of ALLOC
    "aux": np.dtype(np.int64),  # kind-specific, see EventKind
    "aux2": np.dtype(np.int64),  # kind-specific, see EventKind
    "ctx": np.dtype(np.uint8),  # EventContext (format 2+)
}

# Format 1 had every column but ``ctx``.
V1_COLUMNS = [name for name in COLUMNS if name != "ctx"]

ARROW_SCHEMA = pa.schema(
    [pa.field(name, pa.from_numpy_dtype(dt), nullable=False) for name, dt in COLUMNS.items()],
    metadata={b"kmemtrace.format_version": str(FORMAT_VERSION).encode()},
)

V1_ARROW_SCHEMA = pa.schema([ARROW_SCHEMA.field(name) for name in V1_COLUMNS])

# SLAB_SAMPLE rows (format 2, additive): what the CPUs hold rides in columns the kind did
# not use, flagged in ``gfp`` per row, since a sampler reads those files only now and then
# and older traces have 0 there (docs/trace-format.md, "SLAB_SAMPLE").
SAMPLE_HAS_CPU_FIELDS = 1
# The recorder's sample tuple, in order, onto columns.
SAMPLE_COLUMNS = ("ts_ns", "cache_id", "aux", "aux2", "bytes", "pid", "ptr", "gfp")

ROOT_MEMCG_ID = 1  # the root cgroup's id on v1 and v2: not charged, never offline
GFP_ACCOUNT = 1 << 22  # ___GFP_ACCOUNT_BIT on 6.x (include/linux/gfp_types.h)
GFP_DMA = 1 << 0  # ___GFP_DMA_BIT, on every kernel since the bits were numbered
GFP_RECLAIMABLE = 1 << 4  # ___GFP_RECLAIMABLE_BIT, likewise


def empty_columns(n: int) -> dict[str, np.ndarray]:
    """Zero-filled columns for ``n`` events (cache_id defaults to -1 = unknown)."""
    cols = {name: np.zeros(n, dtype=dt) for name, dt in COLUMNS.items()}
    cols["cache_id"][:] = -1
    return cols
