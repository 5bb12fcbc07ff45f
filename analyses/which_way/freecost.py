"""Davydov's June 2014 Way #1 benchmark, replayed: free N objects into a live vs dead cache.

He timed freeing 1M objects per CPU on SLAB (64 B: 373 -> 1300 ms, 1 KiB: 1073 -> 1897 ms).
The model cannot give milliseconds, so we build the same experiment as three tiny traces
per object size (allocate only; allocate then free into the live cache; allocate, offline,
then free into the dead cache), replay them under way1, and take differences: the events
the free phase alone costs (node list_lock takes, pages returned) with and without Way #1.
"""

import tempfile
from pathlib import Path

import pandas as pd

from kmemtrace.metrics import compute_metrics
from kmemtrace.replay.engine import replay
from kmemtrace.strategies import select
from kmemtrace.trace.meta import new_meta
from kmemtrace.trace.reader import TraceReader
from kmemtrace.trace.schema import GFP_ACCOUNT, EventKind, empty_columns
from kmemtrace.trace.writer import TraceWriter

# research §3.1 worked geometry for >= 16 CPUs (Davydov's box had 24): size -> (order, objs)
GEOMETRY = {64: (0, 64), 128: (0, 32), 256: (1, 32), 512: (2, 32), 1024: (3, 32)}
# his table, SLAB, ms per 1M frees per CPU: size -> (live, dead)
PUBLISHED_MS = {64: (373, 1300), 128: (387, 1337), 256: (484, 1407), 512: (686, 1561),
                1024: (1073, 1897)}
MEMCG = 1000
T0 = 1_000_000_000_000
STEP_NS = 1_000


def _write(path: Path, size: int, n: int, phase: str) -> None:
    """phase: 'alloc' (allocate only), 'live' (+ frees), 'dead' (+ offline, then frees)."""
    order, objs = GEOMETRY[size]
    kinds = [EventKind.MEMCG_MKDIR] + [EventKind.ALLOC] * n
    ptrs = [0] + [0xFFFF_8880_0000_0000 + i * size for i in range(n)]
    if phase == "dead":
        kinds.append(EventKind.MEMCG_OFFLINE)
        ptrs.append(0)
    if phase != "alloc":
        kinds += [EventKind.FREE] * n
        ptrs += ptrs[1:n + 1]
    cols = empty_columns(len(kinds))
    cols["ts_ns"][:] = [T0 + i * STEP_NS for i in range(len(kinds))]
    cols["seq"][:] = range(len(kinds))
    cols["kind"][:] = kinds
    cols["ptr"][:] = ptrs
    alloc = cols["kind"] == EventKind.ALLOC
    cols["cache_id"][alloc | (cols["kind"] == EventKind.FREE)] = 0
    cols["memcg_id"][:] = MEMCG
    cols["aux"][0], cols["aux2"][0] = 1, 1  # MKDIR: parent = root, level 1
    cols["bytes"][alloc] = size
    cols["gfp"][alloc] = GFP_ACCOUNT
    meta = new_meta("synth", ncpus=1)
    meta["caches"] = [{"id": 0, "name": f"kmalloc-cg-{size}", "object_size": size,
                       "size": size, "objs_per_slab": objs, "order": order,
                       "accounted": True}]
    meta["clock"] = {"start_ns": T0, "end_ns": int(cols["ts_ns"][-1]) + STEP_NS}
    with TraceWriter(path, meta) as writer:
        writer.append(cols)


def _costs(path: Path, era: str) -> dict:
    m = compute_metrics(replay(TraceReader.open(path), select("way1", {}), era=era).runs[0])
    return {"list_lock": m.list_lock_takes, "pages_freed": m.slab_pages_freed,
            "flushes": m.flushes}


def free_costs(n: int = 20_000, era: str = "5.16") -> pd.DataFrame:
    """Per object size: free-phase events per 1k frees, live vs dead, beside his timings."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kmt-freecost-") as tmp:
        for size in GEOMETRY:
            cost = {}
            for phase in ("alloc", "live", "dead"):
                path = Path(tmp) / f"{size}-{phase}"
                _write(path, size, n, phase)
                cost[phase] = _costs(path, era)
            live = {k: cost["live"][k] - cost["alloc"][k] for k in cost["alloc"]}
            dead = {k: cost["dead"][k] - cost["alloc"][k] for k in cost["alloc"]}
            ms_live, ms_dead = PUBLISHED_MS[size]
            rows.append({
                "size": size, "objs_per_slab": GEOMETRY[size][1],
                "locks_per_1k_live": 1000 * live["list_lock"] / n,
                "locks_per_1k_dead": 1000 * dead["list_lock"] / n,
                "pages_freed_live": live["pages_freed"], "pages_freed_dead": dead["pages_freed"],
                "published_ratio": ms_dead / ms_live,
            })
    df = pd.DataFrame(rows)
    df["model_ratio"] = (1 + df.locks_per_1k_dead / 1000) / (1 + df.locks_per_1k_live / 1000)
    return df
