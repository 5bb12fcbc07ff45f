"""One screenful of ``top``: plain data built from two counter reads and the kernel's counts.

Render functions (:mod:`kmemtrace.top.render`) and ``--format json`` both read a
:class:`Snapshot`; neither touches the recorder or the state. Another panel (a what-if view)
is another function over the same snapshot, or another field filled here.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from kmemtrace.top.state import Counters, Memcg

SORTS = ("bytes", "rate", "age")
TOP_CACHES = 3  # caches named per memcg row


@dataclass
class Header:
    host: str
    kernel: str
    allocator: str
    cgroup: str  # v1 | v2
    attach: str  # the attach plan in one line
    offline_from: str
    interval_s: float
    elapsed_s: float
    events_per_s: float
    events: int
    lost: dict[str, int]  # LostReason name -> events, since start
    online: int
    dying: int | None
    dying_source: str
    removed_seen: int  # memcgs this session saw go offline
    tracked_objects: int  # live objects allocated since start (the pairing table)
    subtree: str | None
    record_to: str | None


@dataclass
class MemcgRow:
    id: int
    path: str
    online: bool
    age_s: float | None  # since offline (dying) or since mkdir (online, if seen)
    released: bool
    live_bytes: int  # from the stream: objects allocated since start, not yet freed
    live_objects: int
    kernel_bytes: int | None  # the kernel's own figure (online memcgs only)
    alloc_per_s: float
    free_per_s: float
    # the memcg's biggest caches: (cache, live objects, live bytes)
    top_caches: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.path if self.online else f"(removed) id {self.id}"


@dataclass
class CacheRow:
    name: str
    objects: int | None  # /sys/kernel/slab/<cache>/objects (all memcgs, all merged names)
    slabs: int | None
    alloc_per_s: float
    free_per_s: float
    live_objects: int  # tracked: accounted objects allocated since start, not yet freed
    live_bytes: int
    offline_objects: int  # of those, charged to memcgs now offline

    @property
    def offline_share(self) -> float | None:
        """Objects charged to offline memcgs per object the kernel says the cache holds."""
        return self.offline_objects / self.objects if self.objects else None


@dataclass
class Snapshot:
    header: Header
    memcgs: list[MemcgRow]
    caches: list[CacheRow]
    kmem_source: str

    def to_json(self) -> dict:
        out = asdict(self)
        for row, data in zip(self.memcgs, out["memcgs"], strict=True):
            data["label"] = row.label
        for row, data in zip(self.caches, out["caches"], strict=True):
            data["offline_share"] = row.offline_share
        return out


def rates(now: Counters, before: Counters) -> tuple[np.ndarray, np.ndarray, float]:
    """Allocations and frees per second per (memcg, cache) between two reads."""
    dt = max((now.ts_ns - before.ts_ns) / 1e9, 1e-9)
    rows = len(before.allocs)
    cols = before.allocs.shape[1]
    same = (before.ids == now.ids[:rows])[:, None]  # a reused row started from zero
    allocs = now.allocs.copy()
    frees = now.frees.copy()
    allocs[:rows, :cols] -= before.allocs * same
    frees[:rows, :cols] -= before.frees * same
    return allocs / dt, frees / dt, dt


def memcg_rows(memcgs: list[Memcg | None], now: Counters, before: Counters, now_ns: int,
               cache_names: list[str], in_view) -> list[MemcgRow]:
    """Every memcg worth a row: it holds tracked objects, allocates or frees now, or went
    offline during the session and is not yet freed. ``in_view(path)`` limits to a subtree."""
    alloc_rate, free_rate, _dt = rates(now, before)
    out = []
    for idx, m in enumerate(memcgs[:len(now.live_bytes)]):
        if m is None:
            continue
        objs = int(now.live_objs[idx].sum())
        a, f = float(alloc_rate[idx].sum()), float(free_rate[idx].sum())
        dying = not m.online and m.released_ns is None
        if not (objs or a or f or dying) or not in_view(m.path):
            continue
        since = m.offline_ns if not m.online else m.mkdir_ns
        by_cache = now.live_bytes[idx]
        top = [(cache_names[c], int(now.live_objs[idx, c]), int(by_cache[c]))
               for c in np.argsort(-by_cache, kind="stable")[:TOP_CACHES] if by_cache[c] > 0]
        out.append(MemcgRow(id=m.id, path=m.path, online=m.online,
                            age_s=None if since is None else (now_ns - since) / 1e9,
                            released=m.released_ns is not None,
                            live_bytes=int(by_cache.sum()), live_objects=objs,
                            kernel_bytes=None, alloc_per_s=a, free_per_s=f, top_caches=top))
    return out


def sort_memcgs(rows: list[MemcgRow], key: str) -> list[MemcgRow]:
    """Worst first: most bytes, busiest, or longest dead (then oldest online)."""
    if key == "bytes":
        return sorted(rows, key=lambda r: (-r.live_bytes, r.path))
    if key == "rate":
        return sorted(rows, key=lambda r: (-(r.alloc_per_s + r.free_per_s), -r.live_bytes))
    return sorted(rows, key=lambda r: (r.online, -(r.age_s or 0.0), -r.live_bytes))


def cache_rows(memcgs: list[Memcg | None], now: Counters, before: Counters,
               cache_names: list[str]) -> list[CacheRow]:
    """Per cache column, the stream's figures (sysfs ones are filled in by the caller)."""
    alloc_rate, free_rate, dt = rates(now, before)
    unpaired = now.unpaired_frees.copy()
    unpaired[:len(before.unpaired_frees)] -= before.unpaired_frees
    n = len(now.live_objs)
    offline = np.array([m is not None and not m.online for m in memcgs[:n]], bool)
    out = []
    for c in range(now.live_objs.shape[1]):
        objs = int(now.live_objs[:, c].sum())
        a = float(alloc_rate[:, c].sum())
        f = float(free_rate[:, c].sum()) + (unpaired[c] / dt if c < len(unpaired) else 0.0)
        if not (objs or a or f):
            continue
        out.append(CacheRow(name=cache_names[c], objects=None, slabs=None, alloc_per_s=a,
                            free_per_s=f, live_objects=objs,
                            live_bytes=int(now.live_bytes[:, c].sum()),
                            offline_objects=int(now.live_objs[offline, c].sum())))
    return sorted(out, key=lambda r: (-r.live_bytes, -(r.alloc_per_s + r.free_per_s)))
