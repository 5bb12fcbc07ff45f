"""A ``top`` session: the recorder (same checks, attach plan, draining and loss accounting
as ``record``) with a :class:`TopState` on its tap, and the kernel's counts beside it.

``snapshot()`` is called once per interval by the CLI; the drain loop itself is the
recorder's own :meth:`~kmemtrace.record.recorder.Recorder.run`.
"""

import os
from collections import Counter

from kmemtrace.record import probes, sysfs
from kmemtrace.record.recorder import Recorder, now_ns
from kmemtrace.top import kernel
from kmemtrace.top.snapshot import (
    CacheRow,
    Header,
    Snapshot,
    cache_rows,
    memcg_rows,
    sort_memcgs,
)
from kmemtrace.top.state import TopState
from kmemtrace.trace.schema import LostReason

NO_CACHE = "(kmalloc_large)"  # column 0: objects of no slab cache (page allocator)


def attach_line(plan: list[probes.Probe]) -> str:
    """The attach plan in one line: what is attached, by which mechanism, what is missing."""
    by_type: dict[str, list[str]] = {}
    for row in plan:
        if row.status == "attached":
            by_type.setdefault(row.type, []).append(row.probe.split(":")[-1])
    missing = [row.probe for row in plan if row.status != "attached"]
    parts = [f"{kind}: {', '.join(names)}" for kind, names in by_type.items()]
    if missing:
        parts.append(f"missing: {', '.join(missing)}")
    return "; ".join(parts)


class TopSession:
    """Owns the started recorder's view; ``snapshot()`` the numbers of the last interval."""

    def __init__(self, rec: Recorder, interval_s: float, sort: str, count: int):
        self.rec = rec
        self.feats = rec.feats
        self.interval_s = interval_s
        self.sort = sort
        self.count = count
        self.state = TopState(rec.memcgs, rec.start_ns)
        rec.taps.append(self.state.feed)
        self.before = self.state.counters()
        self.host = os.uname().nodename
        self.allocator = "SLUB" if sysfs.SLAB_ROOT.is_dir() else "SLAB/SLOB (no /sys/kernel/slab)"

    def _in_view(self, path: str) -> bool:
        sub = self.rec.subtree_path
        return sub in (None, "/") or path == sub or path.startswith(sub + "/")

    def cache_names(self, columns: int) -> list[str]:
        caches = self.rec.caches
        return [NO_CACHE] + [caches[c]["name"] if c < len(caches) else f"(cache {c})"
                             for c in range(columns - 1)]

    def lost(self) -> dict[str, int]:
        """Events lost since start, by reason (the recorder's own accounting)."""
        out: Counter[str] = Counter()
        for (_cpu, reason), count in (self.rec.lost_per_cpu()
                                      | self.rec.pipeline.lost_rows()).items():
            out[LostReason(reason).name] += count
        return dict(out)

    def snapshot(self) -> Snapshot:
        """The numbers since the previous call (rates) and since start (live objects)."""
        now = self.state.counters()
        now.ts_ns = max(now.ts_ns, now_ns())
        names = self.cache_names(now.live_bytes.shape[1])
        memcgs = memcg_rows(self.state.memcgs, now, self.before, now.ts_ns, names, self._in_view)
        memcgs = sort_memcgs(memcgs, self.sort)[:self.count]
        for row in memcgs:
            if row.online:
                row.kernel_bytes = kernel.kmem_bytes(self.feats.cgroup, self.feats.memcg_root,
                                                     row.path)
        caches = cache_rows(self.state.memcgs, now, self.before, names)[:self.count]
        self._sample(caches)
        counts = kernel.memcg_counts(self.feats.cgroup, self.feats.memcg_root,
                                     self.rec.subtree_path)
        dt = max((now.ts_ns - self.before.ts_ns) / 1e9, 1e-9)
        header = Header(
            host=self.host, kernel=self.feats.release, allocator=self.allocator,
            cgroup=self.feats.cgroup, attach=attach_line(self.rec.plan),
            offline_from=probes.offline_source_note(self.rec.plan), interval_s=self.interval_s,
            elapsed_s=(now.ts_ns - self.rec.start_ns) / 1e9,
            events_per_s=(now.events - self.before.events) / dt, events=now.events,
            lost=self.lost(), online=counts.online, dying=counts.dying,
            dying_source=counts.source,
            removed_seen=self.state.offlined,
            tracked_objects=self.state.tracked_objects, subtree=self.rec.subtree_path,
            record_to=None if self.rec.opts.output is None else str(self.rec.opts.output))
        self.before = now
        return Snapshot(header, memcgs, caches, kernel.kmem_source(self.feats.cgroup))

    def _sample(self, rows: list[CacheRow]) -> None:
        """Objects and slabs from /sys/kernel/slab for the caches on screen."""
        by_name = {c["name"]: c for c in self.rec.caches}
        wanted = [by_name[r.name] for r in rows if r.name in by_name]
        found = {cid: (slabs, objects) for cid, slabs, objects in sysfs.sample_slabs(wanted)}
        for row in rows:
            cache = by_name.get(row.name)
            if cache is not None and cache["id"] in found:
                row.slabs, row.objects = found[cache["id"]]
