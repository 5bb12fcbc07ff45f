"""What ``kmemtrace top`` knows, built from the recorder's batches of trace columns.

The view is fed the same rows a trace would hold (the recorder's tap, see
:class:`kmemtrace.record.recorder.Recorder`), so it shows exactly what ``record`` would have
written. A FREE carries no memcg: it is paired with its ALLOC by address, as the replay does,
through a table of the objects allocated since start that are still live. That pairing runs
for every event (millions a second on a busy host), so it is one numba loop over a batch,
not Python per event. Objects allocated before ``top`` started are not in the table: their
frees count in the cache's free rate only, never against a memcg.

Per memcg and cache the state keeps live objects and bytes and cumulative allocations and
frees; rates are differences between two :meth:`TopState.counters` reads. Memcg identity and
life cycle (path, mkdir, offline, release) come from the life-cycle rows and the recorder's
memcg table, which it fills from the same cgroup records before the rows reach the tap.
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.typed import Dict

from kmemtrace.trace.schema import EventKind, LostReason

_ALLOC, _FREE = int(EventKind.ALLOC), int(EventKind.FREE)
# A live object's memcg index, cache column and size, packed in one int64 value of the
# address table: bytes in the low 32 bits, cache column in the next 13, memcg index above.
_CACHE_SHIFT, _MEMCG_SHIFT = 32, 45
_CACHE_MASK = (1 << 13) - 1
MAX_CACHE_COLUMNS = _CACHE_MASK  # column 0 holds objects of no cache (kmalloc_large)


@njit(cache=True)
def _apply(kind, ptr, memcg, cache, nbytes, live, live_bytes, live_objs, allocs, frees,
           unpaired_frees):
    """Pair the batch's ALLOCs and FREEs by address and update the per (memcg, cache) tables.

    An ALLOC whose address is still live means the FREE in between was not seen (the
    recorder counts those as LOST FREE_UNSEEN): the old object leaves the tables.
    """
    for i in range(kind.shape[0]):
        k = kind[i]
        if k != _ALLOC and k != _FREE:
            continue
        old = live.pop(ptr[i], -1)
        if old >= 0:
            m = old >> _MEMCG_SHIFT
            c = (old >> _CACHE_SHIFT) & _CACHE_MASK
            live_bytes[m, c] -= old & 0xFFFFFFFF
            live_objs[m, c] -= 1
        if k == _ALLOC:
            m, c, b = memcg[i], cache[i] + 1, nbytes[i]
            live[ptr[i]] = (m << _MEMCG_SHIFT) | (c << _CACHE_SHIFT) | b
            live_bytes[m, c] += b
            live_objs[m, c] += 1
            allocs[m, c] += 1
        elif old >= 0:
            frees[old >> _MEMCG_SHIFT, (old >> _CACHE_SHIFT) & _CACHE_MASK] += 1
        else:
            unpaired_frees[cache[i] + 1] += 1


@dataclass
class Memcg:
    """One memcg seen by this session: from the tree at start or from its MKDIR row."""

    id: int
    path: str
    mkdir_ns: int | None = None  # None: it existed before the session
    offline_ns: int | None = None
    released_ns: int | None = None

    @property
    def online(self) -> bool:
        return self.offline_ns is None


@dataclass
class Counters:
    """Cumulative per (memcg index, cache column) tables at one moment (copies)."""

    ts_ns: int
    events: int
    ids: np.ndarray  # memcg id of each row (-1: free), as rows are reused
    live_bytes: np.ndarray
    live_objs: np.ndarray
    allocs: np.ndarray
    frees: np.ndarray
    unpaired_frees: np.ndarray  # per cache column: frees of objects from before the start


class TopState:
    """Live objects, counts and memcg life cycles; ``feed()`` one batch of trace columns."""

    def __init__(self, memcg_table: list[dict], start_ns: int):
        self.start_ns = start_ns
        self.last_ns = start_ns
        self.events = 0
        self._table = memcg_table  # the recorder's meta["memcgs"]: read, never written
        self._synced = 0
        self.memcgs: list[Memcg | None] = []  # by row in the tables; None: a free row
        self.index: dict[int, int] = {}  # memcg id -> row in the tables
        self._free_rows: list[int] = []
        self.offlined = 0  # memcgs seen going offline
        self._live = Dict.empty(key_type=types.int64, value_type=types.int64)
        self.live_bytes = np.zeros((16, 64), np.int64)
        self.live_objs = np.zeros_like(self.live_bytes)
        self.allocs = np.zeros_like(self.live_bytes)
        self.frees = np.zeros_like(self.live_bytes)
        self.unpaired_frees = np.zeros(64, np.int64)
        self.lost_at_stop: Counter[str] = Counter()  # LostReason name -> events
        self._sync_memcgs()

    def _sync_memcgs(self) -> None:
        """Take in memcgs the recorder has added to its table since the last call (their
        MKDIR rows, which follow, give their creation time)."""
        for entry in self._table[self._synced:]:
            self._memcg(entry["id"], entry["path"])
        self._synced = len(self._table)

    def _memcg(self, memcg_id: int, path: str | None = None) -> int:
        idx = self.index.get(memcg_id)
        if idx is None:
            memcg = Memcg(memcg_id, path or f"(id {memcg_id})")
            if self._free_rows:
                idx = self._free_rows.pop()
                self.memcgs[idx] = memcg
            else:
                idx = len(self.memcgs)
                self.memcgs.append(memcg)
            self.index[memcg_id] = idx
        elif path is not None:
            self.memcgs[idx].path = path
        return idx

    def _recycle(self) -> None:
        """Free the rows of memcgs the kernel has released that hold no tracked object (no
        live address points at them): on a host that churns containers, a long session
        stays the size of what is live, not of every memcg it ever saw."""
        n = len(self.memcgs)
        empty = self.live_objs[:n].sum(axis=1) == 0
        for idx in np.flatnonzero(empty).tolist():
            memcg = self.memcgs[idx]
            if memcg is None or memcg.released_ns is None:
                continue
            del self.index[memcg.id]
            self.memcgs[idx] = None
            self.allocs[idx] = 0
            self.frees[idx] = 0
            self._free_rows.append(idx)

    def _grow(self, memcgs: int, columns: int) -> None:
        rows, cols = self.live_bytes.shape
        if memcgs <= rows and columns <= cols:
            return
        shape = (max(rows, 2 * memcgs), max(cols, min(2 * columns, MAX_CACHE_COLUMNS + 1)))
        for name in ("live_bytes", "live_objs", "allocs", "frees"):
            grown = np.zeros(shape, np.int64)
            old = getattr(self, name)
            grown[:rows, :cols] = old
            setattr(self, name, grown)
        self.unpaired_frees = np.pad(self.unpaired_frees, (0, shape[1] - cols))

    def feed(self, cols: dict[str, np.ndarray]) -> None:
        """One batch of trace columns, in the recorder's order."""
        kind = cols["kind"]
        if not len(kind):
            return
        self.last_ns = max(self.last_ns, int(cols["ts_ns"].max()))
        self._sync_memcgs()
        slab = (kind == _ALLOC) | (kind == _FREE)
        if not slab.all():
            self._lifecycle(cols, ~slab)
        if not slab.any():
            return
        self.events += int(slab.sum())
        alloc = kind == _ALLOC
        rows = np.zeros(len(kind), np.int64)  # a FREE's memcg comes from its ALLOC
        if alloc.any():
            ids, inverse = np.unique(cols["memcg_id"][alloc], return_inverse=True)
            rows[alloc] = np.array([self._memcg(int(i)) for i in ids], np.int64)[inverse]
        cache = np.minimum(cols["cache_id"].astype(np.int64), MAX_CACHE_COLUMNS - 1)
        self._grow(len(self.memcgs), int(cache.max(initial=-1)) + 2)
        _apply(kind, cols["ptr"].view(np.int64), rows, cache,
                              cols["bytes"].astype(np.int64), self._live, self.live_bytes,
                              self.live_objs, self.allocs, self.frees, self.unpaired_frees)

    def _lifecycle(self, cols: dict[str, np.ndarray], rows: np.ndarray) -> None:
        for kind, memcg_id, ts, aux, aux2 in zip(
                *(cols[name][rows].tolist() for name in ("kind", "memcg_id", "ts_ns", "aux",
                                                         "aux2")), strict=True):
            if kind == EventKind.LOST:  # the recorder's final loss rows, at stop()
                self.lost_at_stop[LostReason(aux2).name] += aux
            elif kind == EventKind.MEMCG_MKDIR:
                self.memcgs[self._memcg(memcg_id)].mkdir_ns = ts
            elif kind == EventKind.MEMCG_OFFLINE:
                memcg = self.memcgs[self._memcg(memcg_id)]
                if memcg.offline_ns is None:
                    memcg.offline_ns = ts
                    self.offlined += 1
            elif kind == EventKind.MEMCG_RELEASE and memcg_id in self.index:
                # (a memcg removed before the start has no row: nothing of it is tracked)
                memcg = self.memcgs[self.index[memcg_id]]
                memcg.released_ns = ts
                memcg.offline_ns = memcg.offline_ns or ts

    def counters(self) -> Counters:
        """A copy of the tables now (the drain loop keeps feeding the originals); rows of
        released memcgs that hold nothing are freed first."""
        self._recycle()
        n = len(self.memcgs)
        ids = np.array([-1 if m is None else m.id for m in self.memcgs], np.int64)
        return Counters(self.last_ns, self.events, ids, self.live_bytes[:n].copy(),
                        self.live_objs[:n].copy(), self.allocs[:n].copy(),
                        self.frees[:n].copy(), self.unpaired_frees.copy())

    @property
    def tracked_objects(self) -> int:
        """Live objects allocated since start (the address table's size)."""
        return len(self._live)
